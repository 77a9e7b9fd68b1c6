//! The calendar placed and drawn: posts on the right day and hour in the viewer's zone, the
//! channel's own clock beside it, queue slots as markers, every POST form with its CSRF
//! field, hostile text escaped, and no changing control for a viewer.

use chrono::NaiveDate;
use enlace_store::social::{ChannelRow, PostDetail, PostRow, TargetRow};
use serde_json::{Value, json};

use super::super::auth::Role;
use super::super::{Flash, Session, render};
use super::*;

const EVIL: &str = "<script>alert(1)</script>\"'&";

fn ms(rfc: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc).unwrap().timestamp_millis()
}

fn channel(id: &str, name: &str, tz: &str, slots: Value) -> ChannelRow {
    ChannelRow {
        id: id.into(),
        name: name.into(),
        network: "mastodon".into(),
        connection_id: Some("m1".into()),
        params: json!({}),
        timezone: tz.into(),
        slots,
        paused_reason: None,
        paused_at: None,
        limits: None,
        limits_at: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn target(id: &str, ch: &str, st: &str, at: Option<i64>) -> TargetRow {
    TargetRow {
        id: id.into(),
        post_id: "p1".into(),
        channel_id: ch.into(),
        text: None,
        status: st.into(),
        scheduled_at: at,
        due_at: at,
        queued: false,
        attempts: 0,
        owner: None,
        lease_until: None,
        sent_at: None,
        remote_id: None,
        remote_url: None,
        published_at: None,
        reason: None,
        error: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn post(id: &str, text: &str, targets: Vec<TargetRow>) -> PostDetail {
    let status = enlace_store::social::post_status(&targets).to_string();
    PostDetail {
        post: PostRow {
            id: id.into(),
            text: text.into(),
            media: json!([]),
            link: None,
            options: json!({}),
            origin: "ui:marta".into(),
            dedupe_key: None,
            created_at: 0,
            updated_at: 0,
        },
        status,
        targets,
    }
}

fn madrid() -> Tz {
    "Europe/Madrid".parse().unwrap()
}

fn day<'a>(grid: &'a Value, date: &str) -> &'a Value {
    grid["weeks"].as_array().unwrap().iter().flat_map(|w| w["days"].as_array().unwrap()).find(|d| d["date"] == date).unwrap()
}

#[test]
fn month_view_covers_whole_weeks_and_places_posts_on_the_viewers_day() {
    let view = View { kind: ViewKind::Month, anchor: NaiveDate::from_ymd_opt(2026, 12, 15).unwrap(), tz: madrid() };
    // December 2026 starts on a Tuesday and ends on a Thursday.
    assert_eq!(view.days(), (NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(), NaiveDate::from_ymd_opt(2027, 1, 4).unwrap()));
    // Midnight in Madrid is 23:00 UTC the day before (winter).
    assert_eq!(view.range_ms(), (ms("2026-11-29T23:00:00Z"), ms("2027-01-03T23:00:00Z")));
    let chans = vec![channel("c1", "Masto", "America/New_York", json!([])), channel("c2", "Li", "Europe/Madrid", json!([]))];
    // 23:30 UTC on the 9th is 00:30 on the 10th in Madrid (and 18:30 on the 9th in New York).
    let p = post("p1", "Launch day", vec![target("t1", "c1", "scheduled", Some(ms("2026-12-09T23:30:00Z")))]);
    let grid = calendar(&view, &[p], &chans, NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
    assert_eq!(grid["weeks"].as_array().unwrap().len(), 5);
    assert_eq!(grid["count"], 1);
    assert!(day(&grid, "2026-12-09")["chips"].as_array().unwrap().is_empty());
    let chips = day(&grid, "2026-12-10")["chips"].as_array().unwrap();
    assert_eq!(chips.len(), 1);
    let c = &chips[0];
    assert_eq!(
        (c["time"].as_str(), c["local"].as_str(), c["status"].as_str()),
        (Some("00:30"), Some("2026-12-10T00:30"), Some("scheduled"))
    );
    assert_eq!(c["movable"], true);
    assert_eq!(c["targets"], "t1");
    assert_eq!(c["channels"][0]["name"], "Masto");
    assert_eq!(c["channels"][0]["channel_time"], "Wed 18:30 America/New_York", "the channel's own clock");
    assert_eq!(day(&grid, "2026-12-01")["today"], true);
    assert_eq!(day(&grid, "2026-11-30")["outside"], true);
    assert_eq!(day(&grid, "2026-12-10")["empty"], false);
}

#[test]
fn a_post_at_two_times_is_two_chips_and_published_or_held_ones_do_not_move() {
    let view = View { kind: ViewKind::Month, anchor: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(), tz: madrid() };
    let chans = vec![channel("c1", "Masto", "Europe/Madrid", json!([])), channel("c2", "Li", "Europe/Madrid", json!([]))];
    let mut published = target("t1", "c1", "published", Some(ms("2026-12-02T08:00:00Z")));
    published.published_at = Some(ms("2026-12-02T08:00:05Z"));
    published.remote_url = Some("https://m.example/@a/1".into());
    let mut held = target("t2", "c2", "held", Some(ms("2026-12-03T08:00:00Z")));
    held.reason = Some("it may have been published".into());
    let p = post("p1", "Hello", vec![published, held]);
    let grid = calendar(&view, &[p], &chans, NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
    let a = &day(&grid, "2026-12-02")["chips"][0];
    assert_eq!((a["status"].as_str(), a["movable"].as_bool()), (Some("published"), Some(false)));
    assert_eq!(a["channels"][0]["url"], "https://m.example/@a/1");
    assert_eq!(a["channels"][0]["channel_time"], Value::Null, "same zone as the viewer");
    let b = &day(&grid, "2026-12-03")["chips"][0];
    assert_eq!((b["status"].as_str(), b["movable"].as_bool()), (Some("held"), Some(false)));
    assert_eq!(b["channels"][0]["held"], true);
    assert_eq!(b["channels"][0]["reason"], "it may have been published");
}

#[test]
fn week_view_puts_posts_in_their_hour_and_queue_slots_in_the_viewers_zone() {
    let view = View { kind: ViewKind::Week, anchor: NaiveDate::from_ymd_opt(2026, 12, 10).unwrap(), tz: madrid() };
    assert_eq!(view.days(), (NaiveDate::from_ymd_opt(2026, 12, 7).unwrap(), NaiveDate::from_ymd_opt(2026, 12, 14).unwrap()));
    // 09:00 in New York on weekdays is 15:00 in Madrid.
    let chans = vec![channel("c1", "Masto", "America/New_York", json!([{"days": ["mon", "tue", "wed", "thu", "fri"], "time": "09:00"}]))];
    let p = post("p1", "Hi", vec![target("t1", "c1", "scheduled", Some(ms("2026-12-10T09:15:00Z")))]);
    let grid = calendar(&view, &[p], &chans, NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
    let days = grid["days"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    let thu = &days[3];
    assert_eq!(thu["date"], "2026-12-10");
    assert_eq!(thu["hours"][10]["chips"][0]["time"], "10:15");
    assert_eq!(thu["hours"][10]["time"], "10:00");
    assert_eq!(thu["hours"][15]["slots"][0], "Masto slot 09:00 America/New_York");
    let with_slots: Vec<usize> =
        days.iter().map(|d| d["hours"].as_array().unwrap().iter().filter(|h| !h["slots"].as_array().unwrap().is_empty()).count()).collect();
    assert_eq!(with_slots, [1, 1, 1, 1, 1, 0, 0], "weekdays only");
}

#[test]
fn local_times_across_the_clock_changes() {
    let tz = madrid();
    assert_eq!(parse_local("2026-12-10T10:30", tz).unwrap(), ms("2026-12-10T09:30:00Z"));
    assert_eq!(parse_local("2026-07-10T10:30", tz).unwrap(), ms("2026-07-10T08:30:00Z"));
    assert_eq!(parse_local("2026-07-10T10:30:00Z", tz).unwrap(), ms("2026-07-10T10:30:00Z"));
    // 29 March 2026, 02:30 does not exist in Madrid; 25 October 02:30 happens twice: the first.
    let e = parse_local("2026-03-29T02:30", tz).unwrap_err();
    assert!(e.contains("does not exist in Europe/Madrid"), "{e}");
    assert_eq!(parse_local("2026-10-25T02:30", tz).unwrap(), ms("2026-10-25T00:30:00Z"));
    assert!(parse_local("tomorrow", tz).unwrap_err().contains("like 2026-12-01T09:30"));
}

fn session(role: Role) -> Session {
    Session {
        user_id: "u1".into(),
        username: "marta".into(),
        role,
        csrf: "csrf-token-123".into(),
        flash: Some(Flash { kind: "ok".into(), text: "ok".into() }),
        path: "/ui/social".into(),
        base: "http://127.0.0.1:8080".into(),
    }
}

/// The page's data as `render_page` builds it, from real rows (also the shared template
/// tests' sample).
pub(in crate::ui) fn sample() -> Value {
    sample_of(false)
}

fn page_ctx(role: Role, week: bool) -> Value {
    let mut c = session(role).layout();
    c["title"] = json!("Social calendar");
    for (k, v) in sample_of(week).as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn sample_of(week: bool) -> Value {
    let view = View {
        kind: if week { ViewKind::Week } else { ViewKind::Month },
        anchor: NaiveDate::from_ymd_opt(2026, 12, 10).unwrap(),
        tz: madrid(),
    };
    let chans = vec![channel("c1", EVIL, "America/New_York", json!([{"days": [], "time": "09:00"}]))];
    let mut held = target("t2", "c1", "held", Some(ms("2026-12-10T09:00:00Z")));
    held.reason = Some(EVIL.into());
    let posts =
        vec![post("p1", EVIL, vec![target("t1", "c1", "scheduled", Some(ms("2026-12-10T09:00:00Z")))]), post("p2", "held one", vec![held])];
    let grid = calendar(&view, &posts, &chans, NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
    let compose =
        Compose { text: EVIL.into(), error: Some(EVIL.into()), channels: vec![("c1".into(), Some(EVIL.into()))], ..Default::default() };
    json!({
        "view": if week { "week" } else { "month" }, "is_week": week, "period": "December 2026", "tz": "Europe/Madrid", "date": "2026-12-10",
        "zones": ["UTC", "Europe/Madrid"], "here": "/ui/social?view=month&date=2026-12-10&tz=Europe%2FMadrid",
        "select_base": "/ui/social?view=month&date=2026-12-10&tz=Europe%2FMadrid&post=",
        "links": {"prev": "/ui/social?p", "next": "/ui/social?n", "today": "/ui/social?t", "month": "/ui/social?m", "week": "/ui/social?w"},
        "weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        "grid": grid,
        "selected": {"id": "p2", "text": EVIL, "status": "held", "badge": "warn", "targets": [{"id": "t2", "post": "p2", "name": EVIL, "network": "mastodon", "status": "held", "held": true, "reason": EVIL, "when": "2026-12-10 10:00"}],
                     "at": "2026-12-10T10:00", "can_schedule": true, "can_unschedule": true, "can_cancel": true, "editable": false, "close": "/ui/social"},
        "compose": compose.json(&chans, false),
        "editing": false,
        "drafts": [{"id": "p3", "text": EVIL, "href": "/ui/social?post=p3", "channels": [EVIL]}],
        "channels": chans.iter().map(channel_json).collect::<Vec<_>>(),
        "networks": [{"value": "mastodon"}], "connections": [{"id": "m1", "app": "mastodon", "name": EVIL}], "days": DAYS,
    })
}

#[test]
fn the_page_escapes_labels_every_control_and_puts_the_csrf_field_in_every_post_form() {
    for week in [false, true] {
        let html = render("social", &page_ctx(Role::Editor, week));
        assert!(html.starts_with("<!doctype html>") && !html.contains("This is a bug"), "{html}");
        assert!(!html.contains("<script>alert"), "hostile text must be escaped");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<script type=\"module\" src=\"/ui/static/calendar.js\"></script>"));
        assert!(html.contains("<link rel=\"stylesheet\" href=\"/ui/static/calendar.css\">"));
        // Every POST form carries the session's token.
        let mut forms = 0;
        let mut rest = html.as_str();
        while let Some(i) = rest.find("<form") {
            let end = rest[i..].find("</form>").map(|e| i + e).unwrap();
            let form = &rest[i..end];
            if form[..form.find('>').unwrap()].contains("method=\"post\"") {
                forms += 1;
                assert!(form.contains("name=\"_csrf\" value=\"csrf-token-123\""), "a POST form without the CSRF field: {form}");
            }
            rest = &rest[end..];
        }
        // Compose, reschedule, queue, unschedule, cancel, confirm and retry (panel and chip),
        // remove and add a slot, add a channel.
        assert!(forms >= 12, "{forms} forms");
        // Every control has a label.
        let labels: Vec<String> =
            html.match_indices("<label for=\"").map(|(i, _)| html[i + 12..].split('"').next().unwrap().to_string()).collect();
        for kind in ["<input", "<select", "<textarea"] {
            for (i, _) in html.match_indices(kind) {
                let tag = &html[i..i + html[i..].find('>').unwrap() + 1];
                if tag.contains("type=\"hidden\"") {
                    continue;
                }
                let id = tag.split(" id=\"").nth(1).map(|r| r.split('"').next().unwrap().to_string());
                let labelled = tag.contains("aria-label=") || id.is_some_and(|id| labels.contains(&id));
                let wrapped = html.contains(&format!("<label class=\"inline\">{tag}"));
                assert!(labelled || wrapped, "a control without a label: {tag}");
            }
        }
        assert!(html.contains("draggable=\"true\" data-movable=\"true\""), "an editor can drag");
        assert!(html.contains("<a href=\"/ui/social\" aria-current=\"page\">Social</a>"), "the nav marks the calendar");
    }
    let html = render("social", &page_ctx(Role::Editor, false));
    // The scheduled post sits on Thursday 10 December (10:00 in Madrid) and is draggable.
    let cell = html.split("data-date=\"2026-12-10\"").nth(1).unwrap().split("</section>").next().unwrap();
    assert!(cell.contains("data-post=\"p1\"") && cell.contains("<span class=\"chip-time\">10:00</span>"), "{cell}");
    assert!(
        cell.contains("Confirm published") && cell.contains("/ui/social/posts/p2/targets/t2/retry"),
        "held chips have their buttons: {cell}"
    );
    let week = render("social", &page_ctx(Role::Editor, true));
    assert!(week.contains("class=\"slot-marker\">") && week.contains("slot 09:00 America/New_York"), "queue slots in the week view");
}

#[test]
fn a_viewer_sees_the_calendar_but_no_control_that_changes_it() {
    let html = render("social", &page_ctx(Role::Viewer, false));
    assert!(html.contains("data-post=\"p1\""), "the post is shown");
    assert!(!html.contains("method=\"post\" action=\"/ui/social"), "no form that changes anything");
    assert!(!html.contains("draggable=\"true\"") && !html.contains("data-editable"), "nothing to drag");
    assert!(!html.contains("id=\"compose-form\""));
}

#[test]
fn compose_reads_the_form_and_names_what_is_missing() {
    let f = Form::parse(b"_csrf=x&text=Hi&link=https%3A%2F%2Fex.com&channel=c1&channel=c2&override_c2=Own&override_c1=&media_url_0=https%3A%2F%2Fex.com%2Fa.png&media_type_0=image%2Fpng&media_alt_0=A+cat&media_url_1=&media_type_1=&media_alt_1=");
    let input = Compose::from_form(&f).input().unwrap();
    assert_eq!(input.text, "Hi");
    assert_eq!(input.link.as_deref(), Some("https://ex.com"));
    assert_eq!(
        input.targets.iter().map(|t| (t.channel.as_str(), t.text.as_deref())).collect::<Vec<_>>(),
        [("c1", None), ("c2", Some("Own"))]
    );
    assert_eq!(input.media.len(), 1);
    assert_eq!(input.media[0].alt.as_deref(), Some("A cat"));
    let e = Compose::from_form(&Form::parse(b"media_url_1=https%3A%2F%2Fex.com%2Fa.png")).input().unwrap_err();
    assert_eq!(e, "media 2: choose its type");
    let e = Compose::from_form(&Form::parse(b"media_alt_0=alt")).input().unwrap_err();
    assert!(e.starts_with("media 1: give the address"), "{e}");
}

#[test]
fn back_addresses_stay_on_the_calendar() {
    assert_eq!(back(&Form::parse(b"back=%2Fui%2Fsocial%3Fview%3Dweek")), "/ui/social?view=week");
    for evil in ["https://evil.example/", "//evil.example/ui/social", "/ui/runs", "/ui/social//evil"] {
        let body = format!("back={}", form_urlencoded::byte_serialize(evil.as_bytes()).collect::<String>());
        assert_eq!(back(&Form::parse(body.as_bytes())), "/ui/social", "{evil}");
    }
    let q = query_of("/ui/social?view=week&date=2026-12-10&tz=Europe%2FMadrid&post=p1");
    assert_eq!(
        (q.view.as_deref(), q.date.as_deref(), q.tz.as_deref(), q.post.as_deref()),
        (Some("week"), Some("2026-12-10"), Some("Europe/Madrid"), Some("p1"))
    );
}
