//! Rich text facets, found by Enlace in a post's text as the Bluesky app finds them: links,
//! mentions and hashtags, each as a byte range of the UTF-8 text (`index.byteStart`
//! inclusive, `index.byteEnd` exclusive, as the `app.bsky.richtext.facet` lexicon says).
//!
//! - **Links**: `http://` and `https://` URLs (as the scheduler's validation finds them:
//!   trailing sentence punctuation is not part of the URL; a closing `)` is, when the URL
//!   opened one). Bare domains (`example.com/page`) are links only at the start of a word
//!   and when their last label is in [`BARE_DOMAIN_TLDS`], a list of common top-level
//!   domains chosen so that file names (`README.md`, `main.rs`, `app.py`) and abbreviations
//!   (`e.g.`) are not taken for addresses; they link to `https://`.
//! - **Mentions**: `@handle` at the start of a word, the handle a domain name (two labels
//!   or more). The caller resolves it to a DID; one that does not resolve stays plain text.
//! - **Tags**: `#tag` at the start of a word, up to a space; trailing punctuation is left
//!   out; a tag of digits only (`#1`) or longer than 64 graphemes is not a tag; `#️⃣` is not
//!   one either.

use serde_json::{Value, json};

/// What a facet points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feature {
    /// A full URL.
    Link(String),
    /// A handle (without `@`), to resolve to a DID.
    Mention(String),
    /// A tag (without `#`).
    Tag(String),
}

/// A facet found in a text: its byte range and feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub feature: Feature,
}

pub use enlace_core::social::{BARE_DOMAIN_TLDS, valid_domain};

/// The facets of a text, in order, none overlapping (links first, then mentions and tags
/// outside links).
pub fn detect(text: &str) -> Vec<Found> {
    let mut out: Vec<Found> = links(text);
    let mut more = mentions(text);
    more.extend(tags(text));
    for f in more {
        if !out.iter().any(|o| f.start < o.end && o.start < f.end) {
            out.push(f);
        }
    }
    out.sort_by_key(|f| f.start);
    out
}

/// A facet as the lexicon writes it, with the feature's JSON.
pub fn facet_json(start: usize, end: usize, feature: Value) -> Value {
    json!({"index": {"byteStart": start, "byteEnd": end}, "features": [feature]})
}

/// Whether `i` starts a word: the text's start, or after a space or an opening bracket.
fn word_start(text: &str, i: usize, brackets: bool) -> bool {
    text[..i].chars().next_back().is_none_or(|c| c.is_whitespace() || (brackets && c == '('))
}

fn links(text: &str) -> Vec<Found> {
    let mut out = vec![];
    for (a, mut b) in enlace_core::social::url_ranges(text) {
        // `https://en.wikipedia.org/wiki/Bach_(disambiguation)`: the `)` closes the URL's own.
        if text[b..].starts_with(')') && text[a..b].matches('(').count() > text[a..b].matches(')').count() {
            b += 1;
        }
        out.push(Found { start: a, end: b, feature: Feature::Link(text[a..b].to_string()) });
    }
    let urls: Vec<(usize, usize)> = out.iter().map(|f| (f.start, f.end)).collect();
    for (a, b) in enlace_core::social::bare_domain_ranges(text, &urls) {
        out.push(Found { start: a, end: b, feature: Feature::Link(format!("https://{}", &text[a..b])) });
    }
    out.sort_by_key(|f| f.start);
    out
}

fn mentions(text: &str) -> Vec<Found> {
    let mut out = vec![];
    for (i, _) in text.match_indices('@') {
        if !word_start(text, i, true) {
            continue;
        }
        let rest = &text[i + 1..];
        let run = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')).unwrap_or(rest.len());
        let handle = rest[..run].trim_end_matches(['.', '-']);
        if valid_domain(handle) {
            out.push(Found { start: i, end: i + 1 + handle.len(), feature: Feature::Mention(handle.to_ascii_lowercase()) });
        }
    }
    out
}

/// Characters that end a tag besides spaces (soft hyphen, word joiner, zero-width spaces
/// and joiners, the enclosing keycap).
const TAG_STOP: [char; 7] = ['\u{00AD}', '\u{2060}', '\u{200A}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{20E2}'];

/// Punctuation (Unicode's `P` categories, for the scripts posts are written in).
pub fn is_punct(c: char) -> bool {
    matches!(c,
        '!'..='#' | '%'..='*' | ','..='/' | ':' | ';' | '?' | '@' | '['..=']' | '_' | '{' | '}'
        | '\u{00A1}' | '\u{00A7}' | '\u{00AB}' | '\u{00B6}' | '\u{00B7}' | '\u{00BB}' | '\u{00BF}'
        | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}' | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}'
        | '\u{3014}'..='\u{301F}' | '\u{FF01}'..='\u{FF03}' | '\u{FF05}'..='\u{FF0A}' | '\u{FF0C}'..='\u{FF0F}'
        | '\u{FF1A}' | '\u{FF1B}' | '\u{FF1F}' | '\u{FF20}' | '\u{FF3B}'..='\u{FF3D}' | '\u{FF3F}' | '\u{FF5B}'
        | '\u{FF5D}' | '\u{FF5F}'..='\u{FF65}')
}

fn tags(text: &str) -> Vec<Found> {
    let mut out = vec![];
    for (i, hash) in text.match_indices(['#', '＃']) {
        if !word_start(text, i, false) {
            continue;
        }
        let body_start = i + hash.len();
        let rest = &text[body_start..];
        if rest.starts_with('\u{FE0F}') {
            continue;
        }
        let run = rest.find(|c: char| c.is_whitespace() || TAG_STOP.contains(&c)).unwrap_or(rest.len());
        let tag = rest[..run].trim_end_matches(is_punct);
        if tag.is_empty() || tag.chars().all(|c| c.is_numeric() || is_punct(c)) || enlace_core::social::graphemes(tag) > 64 {
            continue;
        }
        out.push(Found { start: i, end: body_start + tag.len(), feature: Feature::Tag(tag.to_string()) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facets as (the text they cover, the feature): offsets must cut the text there.
    fn cut(text: &str) -> Vec<(&str, Feature)> {
        detect(text)
            .into_iter()
            .map(|f| (&text.as_bytes()[f.start..f.end], f.feature))
            .map(|(b, f)| (std::str::from_utf8(b).unwrap(), f))
            .collect()
    }

    #[test]
    fn byte_offsets_after_emoji_combining_marks_and_cjk() {
        // 👩‍👩‍👧 is 18 bytes, é written e + U+0301 is 3, 日本語 is 9, 🇪🇸 is 8.
        let text = "👩‍👩‍👧 Café ne\u{301}e 日本語 🇪🇸 #旅行 see https://example.com/a?b=1. with @alice.bsky.social!";
        let f = detect(text);
        assert_eq!(f.len(), 3, "{f:?}");
        let tag_at = text.find("#旅行").unwrap();
        assert_eq!((f[0].start, f[0].end), (tag_at, tag_at + 1 + 6));
        assert_eq!(f[0].feature, Feature::Tag("旅行".into()));
        let url_at = text.find("https://").unwrap();
        assert_eq!((f[1].start, f[1].end), (url_at, url_at + "https://example.com/a?b=1".len()));
        assert_eq!(f[1].feature, Feature::Link("https://example.com/a?b=1".into()));
        let at = text.find("@alice").unwrap();
        assert_eq!((f[2].start, f[2].end), (at, at + "@alice.bsky.social".len()));
        assert_eq!(f[2].feature, Feature::Mention("alice.bsky.social".into()));
        // Hand-counted: 18 + 1 + "Café " (6) + "ne\u{301}e " (6) + 日本語 (9) + 1 + 🇪🇸 (8) + 1.
        assert_eq!(tag_at, 18 + 1 + 6 + 6 + 9 + 1 + 8 + 1);
        assert_eq!(cut(text).into_iter().map(|(s, _)| s).collect::<Vec<_>>(), ["#旅行", "https://example.com/a?b=1", "@alice.bsky.social"]);
    }

    #[test]
    fn links() {
        assert_eq!(
            cut("read (https://en.wikipedia.org/wiki/Bach_(disambiguation)) and example.com/page, or docs.example.org."),
            [
                (
                    "https://en.wikipedia.org/wiki/Bach_(disambiguation)",
                    Feature::Link("https://en.wikipedia.org/wiki/Bach_(disambiguation)".into())
                ),
                ("example.com/page", Feature::Link("https://example.com/page".into())),
                ("docs.example.org", Feature::Link("https://docs.example.org".into())),
            ]
        );
        // File names, abbreviations, emails and words glued to a dot are not links.
        assert!(
            detect("see README.md, main.rs and e.g. node.js; mail ana@example.com or x.comfy").is_empty(),
            "{:?}",
            detect("see README.md")
        );
        assert!(detect("http:// alone").is_empty());
    }

    #[test]
    fn mentions_and_tags() {
        assert_eq!(
            cut("@bob.example.com: thanks (@carol.test.social) #Rust2026, #rust. #1 #️⃣ a#b x@y.z.com"),
            [
                ("@bob.example.com", Feature::Mention("bob.example.com".into())),
                ("@carol.test.social", Feature::Mention("carol.test.social".into())),
                ("#Rust2026", Feature::Tag("Rust2026".into())),
                ("#rust", Feature::Tag("rust".into())),
            ]
        );
        // A handle needs a dot; a tag ends at a zero-width joiner; a long tag is no tag.
        assert!(detect("@alice alone").is_empty());
        assert_eq!(cut("#ab\u{200D}cd"), [("#ab", Feature::Tag("ab".into()))]);
        assert!(detect(&format!("#{}", "a".repeat(65))).is_empty());
        assert_eq!(detect(&format!("#{}", "a".repeat(64))).len(), 1);
        // Full-width ＃ starts a tag too.
        assert_eq!(cut("＃猫"), [("＃猫", Feature::Tag("猫".into()))]);
    }

    #[test]
    fn a_mention_or_tag_inside_a_link_is_part_of_the_link() {
        assert_eq!(
            cut("https://example.com/@ana.example.com#top"),
            [("https://example.com/@ana.example.com#top", Feature::Link("https://example.com/@ana.example.com#top".into()))]
        );
    }
}
