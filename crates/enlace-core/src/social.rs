//! Social posts as data: the networks a post can go to, what each network's publishing
//! action is called and takes, and the validation of a post against a network's rules
//! (length in the network's own unit, media count and type), with errors that say what to
//! cut. Pure: the scheduler (runner), the API and the `social` app share it.
//!
//! Units, as each network counts:
//! - **Mastodon**: grapheme clusters, every `http(s)://` URL counted as 23 (the instance's
//!   `characters_reserved_per_url`), a remote mention `@user@domain` counted as `@user`;
//!   the limit is the instance's own `configuration.statuses.max_characters` (500 when it is
//!   not known yet).
//! - **Bluesky**: 300 grapheme clusters and 3000 UTF-8 bytes (the `app.bsky.feed.post`
//!   lexicon's `maxGraphemes` and `maxLength`); URLs count in full (the client shortens
//!   nothing: the text is what is posted).
//! - **X**: 280 weighted characters (twitter-text's v3 configuration): the text is NFC
//!   normalised, code points in the Latin, general punctuation and similar ranges weigh 1,
//!   every other code point 2, an emoji (a whole ZWJ sequence, a flag, a keycap, a skin-tone
//!   modified emoji) 2, and every URL 23: `http(s)://` ones, and bare domains
//!   (`example.com/page`) whose top-level domain is in [`BARE_DOMAIN_TLDS`]. Media: up to 4 pictures (JPEG, PNG,
//!   WebP), or one GIF or video (MP4, QuickTime) alone.
//! - **LinkedIn**: 3000 characters (Unicode scalar values). **Facebook page**: 63,206.

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

/// A network a channel publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    Mastodon,
    Bluesky,
    X,
    Linkedin,
    FacebookPage,
}

/// What the scheduler calls to publish on a network, and to look for a post that may have
/// been published (after a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publisher {
    /// The app (connector id).
    pub app: &'static str,
    /// Its action that publishes one post; its output has `id` and, when the network gives
    /// one, `url`.
    pub action: &'static str,
    /// Its action that lists the account's recent posts (`{posts: [{id, url, text,
    /// created_at}]}`), when the network's API allows it: a timeout is checked there before
    /// anything is sent again. Without one, a timeout holds the post for a person.
    pub recent_action: Option<&'static str>,
    /// Its action that reads the instance's limits (an [`InstanceLimits`]), when they differ
    /// per instance (Mastodon).
    pub limits_action: Option<&'static str>,
    /// Whether the publishing action sends the step's idempotency key to the network (then
    /// a resend with the same key cannot make a second post).
    pub idempotency_key: bool,
}

impl Network {
    pub const ALL: [Network; 5] = [Network::Mastodon, Network::Bluesky, Network::X, Network::Linkedin, Network::FacebookPage];

    pub fn as_str(self) -> &'static str {
        match self {
            Network::Mastodon => "mastodon",
            Network::Bluesky => "bluesky",
            Network::X => "x",
            Network::Linkedin => "linkedin",
            Network::FacebookPage => "facebook_page",
        }
    }

    pub fn parse(s: &str) -> Result<Network, String> {
        Network::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a network; use one of {}", Network::ALL.map(|n| n.as_str()).join(", ")))
    }

    /// The app and actions that publish here.
    pub fn publisher(self) -> Publisher {
        match self {
            Network::Mastodon => Publisher {
                app: "mastodon",
                action: "post",
                recent_action: Some("recent_posts"),
                limits_action: Some("instance_limits"),
                idempotency_key: true,
            },
            Network::Bluesky => Publisher {
                app: "bluesky",
                action: "post",
                recent_action: Some("recent_posts"),
                limits_action: None,
                idempotency_key: false,
            },
            // X takes no idempotency key; its recent posts can be read back.
            Network::X => Publisher {
                app: "x",
                action: "post_tweet",
                recent_action: Some("recent_posts"),
                limits_action: None,
                idempotency_key: false,
            },
            Network::Linkedin => Publisher {
                app: "linkedin",
                action: "create_post",
                recent_action: Some("recent_posts"),
                limits_action: None,
                idempotency_key: false,
            },
            Network::FacebookPage => Publisher {
                app: "facebook_page",
                action: "create_post",
                recent_action: Some("recent_posts"),
                limits_action: None,
                idempotency_key: false,
            },
        }
    }

    /// Whether the network's publishing action takes a link of its own (LinkedIn, Facebook
    /// page); on the others a post's link is written at the end of the text.
    pub fn link_field(self) -> bool {
        matches!(self, Network::Linkedin | Network::FacebookPage)
    }

    /// The text posted: the text, and the link on a line of its own when the network has no
    /// link field and the text does not hold it already.
    pub fn text_with_link(self, text: &str, link: Option<&str>) -> String {
        match link.map(str::trim).filter(|l| !l.is_empty()) {
            Some(l) if !self.link_field() && !text.contains(l) => {
                if text.trim().is_empty() {
                    l.to_string()
                } else {
                    format!("{}\n\n{l}", text.trim_end())
                }
            }
            _ => text.to_string(),
        }
    }

    /// The account parameters a channel on this network needs, with what each means.
    pub fn required_params(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Network::Mastodon | Network::X => &[],
            Network::Bluesky => &[("handle", "the account's handle, like `alice.bsky.social`")],
            Network::Linkedin => &[("author", "the author's URN, like `urn:li:person:abc123` or `urn:li:organization:2414183`")],
            Network::FacebookPage => &[("page_id", "the page's numeric id, like `104981234567890`")],
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A picture or video attached to a post: where to fetch it, its type and its alt text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Media {
    /// An `https://` address the connector fetches the file from.
    pub url: String,
    /// Its MIME type, like `image/png` or `video/mp4`.
    pub mime_type: String,
    /// A description for people who cannot see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<String>,
}

impl Media {
    fn is_image(&self) -> bool {
        self.mime_type.starts_with("image/")
    }
    fn is_video(&self) -> bool {
        self.mime_type.starts_with("video/") || self.mime_type == "image/gif"
    }
}

/// What a network's instance says about itself (Mastodon's `GET /api/v2/instance`): read
/// by the scheduler, kept with the channel, given to [`validate`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_characters: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_media_attachments: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub characters_reserved_per_url: Option<usize>,
    /// The MIME types the instance takes; empty: not known (any image, video or audio).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_mime_types: Vec<String>,
}

impl InstanceLimits {
    /// Reads Mastodon's `GET /api/v2/instance` answer (its `configuration`).
    pub fn from_mastodon_instance(v: &serde_json::Value) -> InstanceLimits {
        let c = &v["configuration"];
        let n = |p: &serde_json::Value| p.as_u64().map(|x| x as usize);
        InstanceLimits {
            max_characters: n(&c["statuses"]["max_characters"]),
            max_media_attachments: n(&c["statuses"]["max_media_attachments"]),
            characters_reserved_per_url: n(&c["statuses"]["characters_reserved_per_url"]),
            supported_mime_types: c["media_attachments"]["supported_mime_types"]
                .as_array()
                .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        }
    }
}

/// How long a text is in a network's unit, and its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measure {
    /// `characters`, `graphemes` or `weighted characters`.
    pub unit: &'static str,
    pub length: usize,
    pub max: usize,
}

/// One reason a post cannot go to a network: the field and what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `text`, `media` or `media[2]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The default characters a Mastodon URL counts as, and Mastodon's default limit.
pub const MASTODON_DEFAULT_MAX: usize = 500;
pub const URL_LENGTH: usize = 23;
pub const BLUESKY_MAX_GRAPHEMES: usize = 300;
pub const BLUESKY_MAX_BYTES: usize = 3000;
pub const X_MAX_WEIGHTED: usize = 280;
pub const LINKEDIN_MAX: usize = 3000;
pub const FACEBOOK_MAX: usize = 63_206;

/// Checks a post's text and media against a network's rules. `limits` is what the instance
/// said (Mastodon); other networks ignore it. Returns the text's measure, or every problem.
pub fn validate(network: Network, text: &str, media: &[Media], limits: &InstanceLimits) -> Result<Measure, Vec<Problem>> {
    let mut problems = vec![];
    if text.trim().is_empty() && media.is_empty() {
        problems.push(Problem { field: "text".into(), message: "the post is empty: write a text or attach media".into() });
    }
    let measure = match network {
        Network::Mastodon => Measure {
            unit: "characters",
            length: mastodon_length(text, limits.characters_reserved_per_url.unwrap_or(URL_LENGTH)),
            max: limits.max_characters.unwrap_or(MASTODON_DEFAULT_MAX),
        },
        Network::Bluesky => {
            let bytes = text.len();
            if bytes > BLUESKY_MAX_BYTES {
                problems.push(Problem {
                    field: "text".into(),
                    message: format!("{bytes} of {BLUESKY_MAX_BYTES} bytes (UTF-8): cut {} bytes", bytes - BLUESKY_MAX_BYTES),
                });
            }
            Measure { unit: "graphemes", length: graphemes(text), max: BLUESKY_MAX_GRAPHEMES }
        }
        Network::X => Measure { unit: "weighted characters", length: x_weighted_length(text), max: X_MAX_WEIGHTED },
        Network::Linkedin => Measure { unit: "characters", length: text.chars().count(), max: LINKEDIN_MAX },
        Network::FacebookPage => Measure { unit: "characters", length: text.chars().count(), max: FACEBOOK_MAX },
    };
    if measure.length > measure.max {
        problems.push(Problem {
            field: "text".into(),
            message: format!("{} of {} {}: cut {}", measure.length, measure.max, measure.unit, measure.length - measure.max),
        });
    }
    check_media(network, media, limits, &mut problems);
    if problems.is_empty() { Ok(measure) } else { Err(problems) }
}

fn check_media(network: Network, media: &[Media], limits: &InstanceLimits, problems: &mut Vec<Problem>) {
    let mut add = |field: String, message: String| problems.push(Problem { field, message });
    for (i, m) in media.iter().enumerate() {
        if !(m.url.starts_with("https://") || m.url.starts_with("http://")) {
            add(format!("media[{i}].url"), format!("`{}` is not an http(s) address of the file", m.url));
        }
    }
    let (max, types): (usize, &[&str]) = match network {
        Network::Mastodon => (limits.max_media_attachments.unwrap_or(4), &["image/", "video/", "audio/"]),
        Network::Bluesky => (4, &["image/jpeg", "image/png", "image/webp", "image/gif"]),
        Network::X => (4, &["image/jpeg", "image/png", "image/webp", "image/gif", "video/mp4", "video/quicktime"]),
        Network::Linkedin | Network::FacebookPage => (1, &["image/jpeg", "image/png", "image/gif"]),
    };
    let what = match network {
        Network::Linkedin | Network::FacebookPage => "image",
        Network::Bluesky => "image",
        _ => "attachment",
    };
    if media.len() > max {
        add("media".into(), format!("{} of {max} {what}s: remove {}", media.len(), media.len() - max));
    }
    for (i, m) in media.iter().enumerate() {
        let ok = if network == Network::Mastodon && !limits.supported_mime_types.is_empty() {
            limits.supported_mime_types.iter().any(|t| t == &m.mime_type)
        } else {
            types.iter().any(|t| if t.ends_with('/') { m.mime_type.starts_with(t) } else { m.mime_type == *t })
        };
        if !ok {
            add(
                format!("media[{i}].mime_type"),
                format!("{} does not take `{}`; use {}", network, m.mime_type, types.join(", ").replace("/,", "/*,")),
            );
        }
    }
    if network == Network::X && media.iter().any(Media::is_video) && media.len() > 1 {
        add("media".into(), "X takes one video or GIF alone, or up to 4 images: remove the others".into());
    }
    if network == Network::Mastodon && media.iter().any(|m| m.mime_type.starts_with("video/")) && media.iter().any(Media::is_image) {
        add("media".into(), "Mastodon does not mix a video with images in one post: keep one kind".into());
    }
}

/// Grapheme clusters (extended), as people see characters: `👩‍👩‍👧` is 1, `🇪🇸` is 1,
/// `é` written as `e` + U+0301 is 1.
pub fn graphemes(s: &str) -> usize {
    s.graphemes(true).count()
}

/// The `http://` and `https://` URLs in a text, as byte ranges (trailing punctuation that
/// usually ends a sentence is not part of the URL).
pub fn url_ranges(s: &str) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while from < s.len() {
        let rest = &lower[from..];
        let Some(pos) = [rest.find("https://"), rest.find("http://")].into_iter().flatten().min() else { break };
        let start = from + pos;
        // A URL starts a word.
        let starts_word = s[..start].chars().next_back().is_none_or(|c| c.is_whitespace() || "([{<\"'".contains(c));
        let scheme = if lower[start..].starts_with("https://") { 8 } else { 7 };
        let mut end = start + scheme;
        for (i, c) in s[end..].char_indices() {
            if c.is_whitespace() || c == '<' || c == '>' || c == '"' {
                end = start + scheme + i;
                break;
            }
            end = start + scheme + i + c.len_utf8();
        }
        while end > start + scheme && s[..end].ends_with(['.', ',', ';', ':', '!', '?', ')', '\'', ']']) {
            end -= 1;
        }
        if starts_word && end > start + scheme {
            out.push((start, end));
        }
        from = end.max(start + scheme);
    }
    out
}

/// Top-level domains a bare domain (`example.com/page`, without `https://`) may end with to
/// be taken for an address: common ones, chosen so that file names (`README.md`, `main.rs`,
/// `app.py`) and abbreviations (`e.g.`) are not. Bluesky's facets and X's length use it (X's
/// own counter knows every top-level domain; rarer ones are counted here as text).
pub const BARE_DOMAIN_TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "info", "biz", "io", "co", "app", "dev", "blog", "social", "news", "online", "site", "store",
    "shop", "tech", "xyz", "me", "tv", "fm", "uk", "de", "fr", "es", "it", "nl", "be", "eu", "ch", "at", "ie", "pt", "se", "no", "dk",
    "fi", "ca", "us", "mx", "br", "ar", "cl", "jp", "kr", "cn", "in", "au", "nz", "za",
];

/// The end of a bare domain link starting at byte `i` (the domain, then a path, query or
/// fragment), if it is one: a [`valid_domain`] whose last label is in [`BARE_DOMAIN_TLDS`],
/// not followed by a letter, `@` or `_`. The caller checks that `i` starts a word.
pub fn bare_domain_end(text: &str, i: usize) -> Option<usize> {
    let rest = &text[i..];
    let run = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')).unwrap_or(rest.len());
    let domain = rest[..run].trim_end_matches(['.', '-']);
    if !valid_domain(domain) {
        return None;
    }
    let tld = domain.rsplit('.').next()?.to_ascii_lowercase();
    if !BARE_DOMAIN_TLDS.contains(&tld.as_str()) {
        return None;
    }
    let mut end = i + domain.len();
    let after = &text[end..];
    if after.starts_with(['/', '?', '#']) {
        let tail = after.find(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '"').unwrap_or(after.len());
        end += tail;
        while text[i..end].ends_with(['.', ',', ';', ':', '!', '?', '\'', ']']) {
            end -= 1;
        }
        if text[i..end].ends_with(')') && text[i..end].matches('(').count() < text[i..end].matches(')').count() {
            end -= 1;
        }
    } else if after.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '@' || c == '_') {
        // `example.com_x`, `alice.example.com@…`: not a link.
        return None;
    }
    Some(end)
}

/// A domain name: two labels or more of letters, digits and `-` (not at either end of a
/// label), 1 to 63 characters each, the last one starting with a letter.
pub fn valid_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    labels.len() >= 2
        && d.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels.last().and_then(|l| l.bytes().next()).is_some_and(|b| b.is_ascii_alphabetic())
}

/// The bare domains of a text (`example.com`, `shop.example.co/sale`: see
/// [`bare_domain_end`]) that start a word (after a space or an opening bracket or quote)
/// and lie outside the ranges `taken` (the `http(s)://` URLs found before).
pub fn bare_domain_ranges(s: &str, taken: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut i = 0;
    while i < s.len() {
        let c = s[i..].chars().next().expect("a char");
        let starts_word = s[..i].chars().next_back().is_none_or(|p| p.is_whitespace() || "([{<\"'".contains(p));
        if c.is_ascii_alphanumeric()
            && starts_word
            && !taken.iter().any(|&(a, b)| a <= i && i < b)
            && let Some(end) = bare_domain_end(s, i)
        {
            out.push((i, end));
            i = end;
            continue;
        }
        i += c.len_utf8();
    }
    out
}

/// The URLs X counts as 23: [`url_ranges`] and [`bare_domain_ranges`], in order.
pub fn x_url_ranges(s: &str) -> Vec<(usize, usize)> {
    let mut out = url_ranges(s);
    out.extend(bare_domain_ranges(s, &out));
    out.sort_unstable();
    out
}

/// Mastodon's length: grapheme clusters, each URL as `url_length`, `@user@domain` as `@user`.
pub fn mastodon_length(s: &str, url_length: usize) -> usize {
    let mut total = 0;
    let mut last = 0;
    for (a, b) in url_ranges(s) {
        total += mastodon_plain(&s[last..a]) + url_length;
        last = b;
    }
    total + mastodon_plain(&s[last..])
}

/// Graphemes with the domain of remote mentions left out.
fn mastodon_plain(s: &str) -> usize {
    let mut total = 0;
    let mut rest = s;
    while let Some(at) = rest.find('@') {
        let before = &rest[..at];
        let word_start = before.chars().next_back().is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let after = &rest[at + 1..];
        let user_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        if word_start && user_len > 0 && after[user_len..].starts_with('@') {
            let dom = &after[user_len + 1..];
            let dom_len = dom.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')).unwrap_or(dom.len());
            let dom_len = dom[..dom_len].trim_end_matches('.').len();
            if dom_len > 0 && dom[..dom_len].contains('.') {
                total += graphemes(before) + 1 + user_len;
                rest = &dom[dom_len..];
                continue;
            }
        }
        total += graphemes(before) + 1;
        rest = after;
    }
    total + graphemes(rest)
}

/// twitter-text v3's weight of one code point outside emoji (100 = one character).
fn x_weight(c: char) -> usize {
    let cp = c as u32;
    let light = matches!(cp, 0..=4351 | 8192..=8205 | 8208..=8223 | 8242..=8247);
    if light { 1 } else { 2 }
}

/// Whether a grapheme cluster is an emoji (counted as 2 on X, whatever its code points).
fn is_emoji_cluster(g: &str) -> bool {
    g.chars().any(|c| {
        let cp = c as u32;
        matches!(cp, 0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0x2300..=0x23FF | 0xFE0F | 0x20E3)
    })
}

/// X's weighted length (see the module's notes): NFC first, URLs 23, emoji 2, code points by
/// range.
pub fn x_weighted_length(s: &str) -> usize {
    let nfc: String = s.nfc().collect();
    let mut total = 0;
    let mut last = 0;
    for (a, b) in x_url_ranges(&nfc) {
        total += x_plain(&nfc[last..a]) + URL_LENGTH;
        last = b;
    }
    total + x_plain(&nfc[last..])
}

fn x_plain(s: &str) -> usize {
    s.graphemes(true).map(|g| if is_emoji_cluster(g) { 2 } else { g.chars().map(x_weight).sum() }).sum()
}

/// What the `social` app's actions ask of the scheduler (the runner implements it and lends
/// it in `ActionContext::extensions`). `request` is the action's input; `key` the step's
/// idempotency key (a replayed step gives back the post it made); `origin` names the run.
/// The answer is the post as the API shows it, or the reason it was refused.
pub trait SocialBackend: Send + Sync {
    fn schedule(
        &self,
        request: serde_json::Value,
        key: String,
        origin: String,
    ) -> crate::BoxFuture<'_, Result<serde_json::Value, crate::ConnectorError>>;
}

/// A text as compared when looking for a post on the network: whitespace collapsed
/// (networks rewrite line breaks), trimmed, NFC.
pub fn comparable(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").nfc().collect()
}

/// A post's channel time slot: the days it applies to and a local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Slot {
    /// Days of the week, `mon` to `sun`; empty: every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// The local time, `HH:MM` (24 h).
    pub time: String,
}

impl Slot {
    /// The weekdays (0 = Monday) and minutes after midnight, or what is wrong.
    pub fn parse(&self) -> Result<(Vec<u32>, u32), String> {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let mut days = vec![];
        for d in &self.days {
            let l = d.to_ascii_lowercase();
            let l = l.get(..3).unwrap_or(&l);
            match NAMES.iter().position(|n| *n == l) {
                Some(i) => days.push(i as u32),
                None => return Err(format!("`{d}` is not a day; use mon, tue, wed, thu, fri, sat or sun")),
            }
        }
        if days.is_empty() {
            days = (0..7).collect();
        }
        let bad = || format!("`{}` is not a time; write HH:MM, like 09:00 or 13:30", self.time);
        let (h, m) = self.time.split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok((days, h * 60 + m))
    }
}

/// The first slot time strictly after `after_ms` (ms since the epoch) in `tz` that is not in
/// `taken` (sorted or not), looking at most `horizon_days` ahead. Times that do not exist in
/// the zone (a spring-forward gap) are skipped; an ambiguous one (fall back) takes its first.
pub fn next_free_slot(slots: &[Slot], tz: chrono_tz::Tz, after_ms: i64, taken: &[i64], horizon_days: u32) -> Result<Option<i64>, String> {
    use chrono::{Datelike, Duration, LocalResult, NaiveTime, TimeZone};
    let parsed: Vec<(Vec<u32>, u32)> = slots.iter().map(Slot::parse).collect::<Result<_, _>>()?;
    if parsed.is_empty() {
        return Err("the channel has no queue time slots: add some, like {\"days\": [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"], \"time\": \"09:00\"}".into());
    }
    let start = chrono::DateTime::from_timestamp_millis(after_ms).ok_or("the time is out of range")?.with_timezone(&tz).date_naive();
    for d in 0..=horizon_days as i64 {
        let day = start + Duration::days(d);
        let wd = day.weekday().num_days_from_monday();
        let mut times: Vec<i64> = vec![];
        for (days, minutes) in &parsed {
            if !days.contains(&wd) {
                continue;
            }
            let Some(t) = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0) else { continue };
            let at = match tz.from_local_datetime(&day.and_time(t)) {
                LocalResult::Single(x) => x,
                LocalResult::Ambiguous(x, _) => x,
                LocalResult::None => continue,
            };
            times.push(at.timestamp_millis());
        }
        times.sort_unstable();
        times.dedup();
        if let Some(t) = times.into_iter().find(|t| *t > after_ms && !taken.contains(t)) {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(n: usize) -> Vec<Media> {
        (0..n).map(|i| Media { url: format!("https://cdn.example.com/{i}.png"), mime_type: "image/png".into(), alt: None }).collect()
    }

    #[test]
    fn graphemes_bytes_and_weights_of_emoji() {
        // A family: 5 code points joined by ZWJ, one grapheme, 18 bytes.
        let family = "👩\u{200d}👩\u{200d}👧";
        assert_eq!(graphemes(family), 1);
        assert_eq!(family.len(), 18);
        assert_eq!(family.chars().count(), 5);
        assert_eq!(x_weighted_length(family), 2);
        // A flag: two regional indicators.
        let flag = "🇪🇸";
        assert_eq!((graphemes(flag), flag.len(), x_weighted_length(flag)), (1, 8, 2));
        // A skin tone modifier.
        let wave = "👋🏽";
        assert_eq!((graphemes(wave), wave.len(), x_weighted_length(wave)), (1, 8, 2));
        // A keycap.
        let one = "1\u{fe0f}\u{20e3}";
        assert_eq!((graphemes(one), x_weighted_length(one)), (1, 2));
        // Mastodon counts each as one character.
        assert_eq!(mastodon_length(&format!("{family}{flag}{wave}"), 23), 3);
    }

    #[test]
    fn combining_marks_count_once_and_normalise_for_x() {
        let decomposed = "e\u{301}"; // é as e + combining acute
        assert_eq!(graphemes(decomposed), 1);
        assert_eq!(decomposed.len(), 3);
        assert_eq!(x_weighted_length(decomposed), 1, "NFC makes it one Latin code point");
        let hangul = "\u{1100}\u{1161}"; // ᄀ + ᅡ compose to 가 (U+AC00, weight 2)
        assert_eq!(x_weighted_length(hangul), 2);
        assert_eq!(x_weighted_length("日本語"), 6);
        assert_eq!(x_weighted_length("hello"), 5);
        // A Devanagari syllable with a vowel sign: one grapheme, two code points.
        assert_eq!(graphemes("कि"), 1);
    }

    #[test]
    fn urls_count_23_on_mastodon_and_x_and_in_full_on_bluesky() {
        let long = format!("https://example.com/{}", "a".repeat(100));
        let text = format!("Read this: {long}.");
        assert_eq!(url_ranges(&text), vec![(11, 11 + long.len())]);
        assert_eq!(mastodon_length(&text, 23), 11 + 23 + 1);
        assert_eq!(x_weighted_length(&text), 11 + 23 + 1);
        assert_eq!(graphemes(&text), 11 + long.len() + 1);
        // A short URL counts 23 as well.
        assert_eq!(x_weighted_length("http://a.io"), 23);
        // Not a URL: no scheme, or inside a word.
        assert!(url_ranges("example.com xhttps://a.b").is_empty());
        // X takes bare domains for links too (twitter-text); file names are not.
        assert_eq!(x_weighted_length("example.com"), 23);
        assert_eq!(x_weighted_length("See shop.example.co/sale?x=1."), 4 + 23 + 1);
        assert_eq!(x_weighted_length("Read README.md"), 14);
        assert_eq!(x_weighted_length("me@example.com"), 14, "an address is not a link");
        assert_eq!(x_url_ranges("a https://b.example/x example.org"), vec![(2, 21), (22, 33)]);
        // Mastodon does not: a bare domain is text there.
        assert_eq!(mastodon_length("example.com", 23), 11);
        // Remote mention counts as the local part.
        assert_eq!(mastodon_length("hi @alice@example.social!", 23), "hi @alice!".len());
    }

    #[test]
    fn errors_say_what_to_cut() {
        let text = "a".repeat(312);
        let e = validate(Network::Bluesky, &text, &[], &InstanceLimits::default()).unwrap_err();
        assert_eq!(e, vec![Problem { field: "text".into(), message: "312 of 300 graphemes: cut 12".into() }]);
        let e = validate(Network::X, &format!("{} 👋🏽", "b".repeat(278)), &[], &InstanceLimits::default()).unwrap_err();
        assert_eq!(e[0].message, "281 of 280 weighted characters: cut 1");
        // The instance's own limit.
        let lim = InstanceLimits { max_characters: Some(1000), ..Default::default() };
        assert!(validate(Network::Mastodon, &"c".repeat(900), &[], &lim).is_ok());
        let e = validate(Network::Mastodon, &"c".repeat(900), &[], &InstanceLimits::default()).unwrap_err();
        assert_eq!(e[0].message, "900 of 500 characters: cut 400");
        // Media count and type.
        let e = validate(Network::Bluesky, "x", &img(5), &InstanceLimits::default()).unwrap_err();
        assert_eq!(e[0].message, "5 of 4 images: remove 1");
        let video = Media { url: "https://cdn.example.com/v.mp4".into(), mime_type: "video/mp4".into(), alt: None };
        let e = validate(Network::Bluesky, "x", std::slice::from_ref(&video), &InstanceLimits::default()).unwrap_err();
        assert_eq!(e[0].field, "media[0].mime_type");
        assert!(validate(Network::X, "x", std::slice::from_ref(&video), &InstanceLimits::default()).is_ok());
        assert!(validate(Network::X, "x", &[video, img(1).remove(0)], &InstanceLimits::default()).is_err());
        assert!(validate(Network::Linkedin, "x", &img(2), &InstanceLimits::default()).is_err());
        assert!(validate(Network::Linkedin, &"d".repeat(3000), &[], &InstanceLimits::default()).is_ok());
        assert!(validate(Network::FacebookPage, &"d".repeat(63_207), &[], &InstanceLimits::default()).is_err());
        let e = validate(Network::Mastodon, "  ", &[], &InstanceLimits::default()).unwrap_err();
        assert_eq!(e[0].message, "the post is empty: write a text or attach media");
        // Bluesky's byte limit: 300 graphemes of 4-byte emoji... pass graphemes, fail bytes.
        let heavy = "👩\u{200d}👩\u{200d}👧".repeat(200);
        let e = validate(Network::Bluesky, &heavy, &[], &InstanceLimits::default()).unwrap_err();
        assert_eq!(e[0].message, "3600 of 3000 bytes (UTF-8): cut 600 bytes");
    }

    #[test]
    fn x_takes_four_pictures_or_one_video_or_gif() {
        let none = InstanceLimits::default();
        let gif = Media { url: "https://cdn.example.com/a.gif".into(), mime_type: "image/gif".into(), alt: Some("A loop".into()) };
        let mp4 = Media { url: "https://cdn.example.com/v.mp4".into(), mime_type: "video/mp4".into(), alt: None };
        assert!(validate(Network::X, "", &img(4), &none).is_ok(), "media alone, no text");
        assert_eq!(validate(Network::X, "x", &img(5), &none).unwrap_err()[0].message, "5 of 4 attachments: remove 1");
        assert!(validate(Network::X, "x", std::slice::from_ref(&gif), &none).is_ok());
        assert!(validate(Network::X, "x", std::slice::from_ref(&mp4), &none).is_ok());
        for mixed in [vec![gif.clone(), img(1).remove(0)], vec![gif, mp4.clone()], vec![mp4.clone(), mp4]] {
            let e = validate(Network::X, "x", &mixed, &none).unwrap_err();
            assert_eq!(e[0].message, "X takes one video or GIF alone, or up to 4 images: remove the others", "{mixed:?}");
        }
        let bmp = Media { url: "https://cdn.example.com/a.bmp".into(), mime_type: "image/bmp".into(), alt: None };
        assert_eq!(validate(Network::X, "x", &[bmp], &none).unwrap_err()[0].field, "media[0].mime_type");
        // The scheduler reads X's recent posts after a timeout.
        assert_eq!(Network::X.publisher().recent_action, Some("recent_posts"));
    }

    #[test]
    fn links_go_in_the_text_where_there_is_no_link_field() {
        assert_eq!(Network::Mastodon.text_with_link("New post", Some("https://b.example/1")), "New post\n\nhttps://b.example/1");
        assert_eq!(Network::Mastodon.text_with_link("See https://b.example/1", Some("https://b.example/1")), "See https://b.example/1");
        assert_eq!(Network::Linkedin.text_with_link("New post", Some("https://b.example/1")), "New post");
        assert_eq!(Network::X.text_with_link("New", None), "New");
    }

    #[test]
    fn instance_limits_from_mastodon() {
        let v = serde_json::json!({"configuration": {"statuses": {"max_characters": 5000, "max_media_attachments": 6, "characters_reserved_per_url": 23},
            "media_attachments": {"supported_mime_types": ["image/png"]}}});
        let l = InstanceLimits::from_mastodon_instance(&v);
        assert_eq!(l.max_characters, Some(5000));
        assert_eq!(l.max_media_attachments, Some(6));
        assert_eq!(l.supported_mime_types, vec!["image/png".to_string()]);
    }

    #[test]
    fn next_free_slot_in_the_channels_zone() {
        let tz: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
        let slots = vec![
            Slot { days: vec!["mon".into(), "tue".into(), "wed".into(), "thu".into(), "fri".into()], time: "09:00".into() },
            Slot { days: vec!["mon".into(), "tue".into(), "wed".into(), "thu".into(), "fri".into()], time: "13:00".into() },
        ];
        // Friday 2026-11-27 10:00 Madrid (09:00 UTC): next is 13:00 Madrid = 12:00 UTC.
        let fri_10 = chrono::DateTime::parse_from_rfc3339("2026-11-27T10:00:00+01:00").unwrap().timestamp_millis();
        let t1 = next_free_slot(&slots, tz, fri_10, &[], 60).unwrap().unwrap();
        assert_eq!(chrono::DateTime::from_timestamp_millis(t1).unwrap().to_rfc3339(), "2026-11-27T12:00:00+00:00");
        // Taken: Monday 09:00 Madrid.
        let t2 = next_free_slot(&slots, tz, fri_10, &[t1], 60).unwrap().unwrap();
        assert_eq!(chrono::DateTime::from_timestamp_millis(t2).unwrap().to_rfc3339(), "2026-11-30T08:00:00+00:00");
        assert!(next_free_slot(&[], tz, fri_10, &[], 60).is_err());
        assert!(Slot { days: vec!["funday".into()], time: "09:00".into() }.parse().is_err());
        assert!(Slot { days: vec![], time: "25:00".into() }.parse().is_err());
    }
}
