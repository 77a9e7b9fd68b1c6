//! A constant-rate, open-loop HTTP load generator (what `wrk2 -R` does; Debian's wrk has no
//! constant-rate mode).
//!
//! Request `i` is scheduled at `start + i / rate`, whatever the answers to earlier requests
//! are doing, and its latency is measured from that scheduled time to the end of the
//! answer. A server that stalls for 100 ms therefore shows every request scheduled during
//! the stall as late, instead of hiding it behind a paused client (coordinated omission).
//! The time from the actual send is reported too ("service time"), so timer and scheduling
//! slop on the client side can be told apart from the server's own delay.
//!
//! ```text
//! enlace-bench-loadgen --url http://127.0.0.1:18081/hooks/hook --body payload.json \
//!     --rate 1000 --duration 20 [--warmup 2] [--max-in-flight 1024] [--timeout 10] [--threads 1]
//! ```
//!
//! Prints a human-readable report and one machine-readable line:
//! `LOADGEN_SUMMARY rate=.. scheduled=.. completed=.. ok=.. ... p50_ms=.. p99_ms=.. max_ms=..`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

struct Args {
    url: String,
    body: Bytes,
    content_type: String,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    max_in_flight: usize,
    timeout: Duration,
    threads: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: enlace-bench-loadgen --url URL [--body FILE] [--content-type TYPE] --rate PER_SEC --duration SECS \
         [--warmup SECS] [--max-in-flight N] [--timeout SECS] [--threads N]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut url = None;
    let mut body = Bytes::new();
    let mut content_type = "application/json".to_string();
    let mut rate = None;
    let mut duration = Duration::from_secs(10);
    let mut warmup = Duration::ZERO;
    let mut max_in_flight = 1024;
    let mut timeout = Duration::from_secs(10);
    let mut threads = 1;
    let mut it = std::env::args().skip(1);
    let secs = |v: String| -> Duration {
        Duration::from_secs_f64(v.parse::<f64>().unwrap_or_else(|_| {
            eprintln!("not a number of seconds: {v}");
            usage()
        }))
    };
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut val = || inline.clone().or_else(|| it.next()).unwrap_or_else(|| usage());
        match key.as_str() {
            "--url" => url = Some(val()),
            "--body" => {
                let path = val();
                let raw = std::fs::read(&path).unwrap_or_else(|e| {
                    eprintln!("reading {path}: {e}");
                    std::process::exit(2)
                });
                // Like post.lua: trailing whitespace is not part of the payload.
                let end = raw.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |p| p + 1);
                body = Bytes::from(raw[..end].to_vec());
            }
            "--content-type" => content_type = val(),
            "--rate" => rate = val().parse::<f64>().ok().filter(|r| *r > 0.0),
            "--duration" => duration = secs(val()),
            "--warmup" => warmup = secs(val()),
            "--max-in-flight" => max_in_flight = val().parse().unwrap_or_else(|_| usage()),
            "--timeout" => timeout = secs(val()),
            "--threads" => threads = val().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let (Some(url), Some(rate)) = (url, rate) else { usage() };
    Args { url, body, content_type, rate, duration, warmup, max_in_flight: max_in_flight.max(1), timeout, threads: threads.max(1) }
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    status_err: AtomicU64,
    timeout: AtomicU64,
    connect: AtomicU64,
    other: AtomicU64,
}

struct Sample {
    from_scheduled_us: u64,
    from_sent_us: u64,
    client_delay_us: u64,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // nearest rank
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

struct Shared {
    client: reqwest::Client,
    url: reqwest::Url,
    body: Bytes,
    content_type: String,
    sem: Arc<Semaphore>,
    counters: Counters,
    samples: Mutex<Vec<Sample>>,
    waited_for_slot: AtomicU64,
}

/// One request, scheduled at `scheduled`; its latency counts from then.
async fn one(sh: Arc<Shared>, scheduled: Instant, measured: bool) {
    let permit = match sh.sem.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            sh.waited_for_slot.fetch_add(1, Ordering::Relaxed);
            sh.sem.clone().acquire_owned().await.expect("semaphore closed")
        }
    };
    let sent = Instant::now();
    let res =
        sh.client.post(sh.url.clone()).header(reqwest::header::CONTENT_TYPE, sh.content_type.as_str()).body(sh.body.clone()).send().await;
    let c = &sh.counters;
    let outcome = match res {
        Ok(resp) => {
            let status = resp.status();
            match resp.bytes().await {
                Ok(_) if status.is_success() => Ok(()),
                Ok(_) => Err(&c.status_err),
                Err(e) if e.is_timeout() => Err(&c.timeout),
                Err(_) => Err(&c.other),
            }
        }
        Err(e) if e.is_timeout() => Err(&c.timeout),
        Err(e) if e.is_connect() => Err(&c.connect),
        Err(_) => Err(&c.other),
    };
    let done = Instant::now();
    drop(permit);
    if !measured {
        return;
    }
    match outcome {
        Ok(()) => {
            c.ok.fetch_add(1, Ordering::Relaxed);
            let s = Sample {
                from_scheduled_us: done.saturating_duration_since(scheduled).as_micros() as u64,
                from_sent_us: done.saturating_duration_since(sent).as_micros() as u64,
                client_delay_us: sent.saturating_duration_since(scheduled).as_micros() as u64,
            };
            sh.samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        }
        Err(counter) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(args: Args, rt: tokio::runtime::Handle) {
    // reqwest is built with `rustls-no-provider` in this workspace: without a provider,
    // building a Client panics even if only plain http is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.max_in_flight)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(args.timeout)
        .build()
        .expect("building the HTTP client");
    let url = reqwest::Url::parse(&args.url).unwrap_or_else(|e| {
        eprintln!("--url: {e}");
        std::process::exit(2)
    });

    // The first requests open the connections the rate needs; --warmup keeps them out of
    // the figures.
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let total = ((args.warmup + args.duration).as_secs_f64() * args.rate).round() as u64;
    let warm_n = (args.warmup.as_secs_f64() * args.rate).round() as u64;
    let sh = Arc::new(Shared {
        client,
        url,
        body: args.body.clone(),
        content_type: args.content_type.clone(),
        sem: Arc::new(Semaphore::new(args.max_in_flight)),
        counters: Counters::default(),
        samples: Mutex::new(Vec::with_capacity((total - warm_n) as usize)),
        waited_for_slot: AtomicU64::new(0),
    });

    // The pacer is a plain thread: tokio's timer has a 1 ms granularity (a sleep ends on
    // the next millisecond tick), which alone would add ~1 ms to every latency measured
    // from the schedule; a thread sleep ends within ~0.1 ms. It hands each request to the
    // runtime at its time and never waits for an answer.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now() + Duration::from_millis(50);
    let pacer_sh = sh.clone();
    let pacer = std::thread::spawn(move || {
        let mut late_sends = 0u64;
        for i in 0..total {
            let scheduled = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            } else if now - scheduled > Duration::from_millis(1) {
                late_sends += 1;
            }
            let h = rt.spawn(one(pacer_sh.clone(), scheduled, i >= warm_n));
            if tx.send(h).is_err() {
                break;
            }
        }
        (late_sends, Instant::now())
    });
    while let Some(h) = rx.recv().await {
        let _ = h.await;
    }
    let (late_sends, send_end) = pacer.join().expect("pacer thread");
    let measured_secs = args.duration.as_secs_f64();
    let behind_ms = send_end.saturating_duration_since(start + period.mul_f64(total as f64)).as_secs_f64() * 1000.0;

    let samples = std::mem::take(&mut *sh.samples.lock().unwrap_or_else(|e| e.into_inner()));
    let mut sched: Vec<u64> = samples.iter().map(|s| s.from_scheduled_us).collect();
    let mut sent: Vec<u64> = samples.iter().map(|s| s.from_sent_us).collect();
    let mut delay: Vec<u64> = samples.iter().map(|s| s.client_delay_us).collect();
    sched.sort_unstable();
    sent.sort_unstable();
    delay.sort_unstable();
    let c = &sh.counters;
    let (ok, st, to, co, ot) = (
        c.ok.load(Ordering::Relaxed),
        c.status_err.load(Ordering::Relaxed),
        c.timeout.load(Ordering::Relaxed),
        c.connect.load(Ordering::Relaxed),
        c.other.load(Ordering::Relaxed),
    );
    let scheduled = total - warm_n;
    let mean = if sched.is_empty() { 0.0 } else { sched.iter().sum::<u64>() as f64 / sched.len() as f64 / 1000.0 };

    println!(
        "target rate {:.0}/s for {measured_secs:.0} s (after {:.0} s warm-up): {scheduled} requests scheduled",
        args.rate,
        args.warmup.as_secs_f64()
    );
    println!("  ok {ok}, non-2xx {st}, timeouts {to}, connect errors {co}, other errors {ot}");
    println!(
        "  latency from the scheduled send (CO-safe): p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  mean {mean:.2} ms",
        pct(&sched, 50.0),
        pct(&sched, 90.0),
        pct(&sched, 99.0),
        pct(&sched, 99.9),
        pct(&sched, 100.0)
    );
    println!(
        "  service time from the actual send:          p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        pct(&sent, 50.0),
        pct(&sent, 90.0),
        pct(&sent, 99.0),
        pct(&sent, 99.9),
        pct(&sent, 100.0)
    );
    println!(
        "  client-side delay, schedule to send:        p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(&delay, 50.0),
        pct(&delay, 99.0),
        pct(&delay, 100.0)
    );
    println!(
        "  pacer > 1 ms behind schedule: {late_sends} times; waited for an in-flight slot (max {}): {}; pacer ended {behind_ms:.1} ms behind",
        args.max_in_flight,
        sh.waited_for_slot.load(Ordering::Relaxed)
    );
    println!(
        "LOADGEN_SUMMARY rate={:.0} duration_s={measured_secs:.0} scheduled={scheduled} ok={ok} err_status={st} err_timeout={to} err_connect={co} err_other={ot} \
         p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} mean_ms={mean:.2} svc_p50_ms={:.2} svc_p99_ms={:.2} \
         client_delay_p99_ms={:.2} late_sends={late_sends}",
        args.rate,
        pct(&sched, 50.0),
        pct(&sched, 90.0),
        pct(&sched, 99.0),
        pct(&sched, 99.9),
        pct(&sched, 100.0),
        pct(&sent, 50.0),
        pct(&sent, 99.0),
        pct(&delay, 99.0),
    );
}

fn main() {
    let args = parse_args();
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    }
    .expect("building the runtime");
    let handle = rt.handle().clone();
    rt.block_on(run(args, handle));
}

#[cfg(test)]
mod tests {
    use super::pct;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(pct(&v, 50.0), 50.0);
        assert_eq!(pct(&v, 99.0), 99.0);
        assert_eq!(pct(&v, 100.0), 100.0);
        assert_eq!(pct(&[], 99.0), 0.0);
    }
}
