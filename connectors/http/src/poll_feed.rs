//! `http.poll_feed`: a polling trigger over an RSS or Atom feed (a blog, a podcast, a
//! changelog).
//!
//! Each poll GETs the feed and reads its entries: RSS 2.0 and RSS 1.0 `<item>`s, Atom
//! `<entry>`s. An entry's dedupe key is its `guid` / `id`, else its link, else its title and
//! date. Entries are handed to the runner newest first (by their date where every entry has
//! one, otherwise in the feed's order, which feeds write newest first); the runner fires the
//! unseen ones oldest first and skips those already seen.
//!
//! Written on quick-xml's pull reader (already in the dependency tree) rather than a feed
//! crate: the part of the formats a trigger needs is small (a dozen elements), and the feed
//! crates bring their own date, URL and MIME stacks.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use http::{HeaderValue, Method};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use enlace_core::http::HttpRequest;
use enlace_core::trigger::{PollPage, PollingTrigger};
use enlace_core::{ActionContext, ConnectorError};
use enlace_kit::Url;

/// The most entries one poll takes from the feed (the newest ones).
pub const MAX_ITEMS: usize = 500;
/// How long one poll may take.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// The trigger's `with`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address of the feed, in full: `https://blog.example.com/feed.xml` (RSS 2.0,
    /// RSS 1.0 or Atom). Loopback, private-network and link-local addresses are refused
    /// unless the installation sets ENLACE_ALLOW_PRIVATE_NETWORKS=true.
    pub url: String,
}

/// One entry of the feed; the run's `trigger` is this value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct Entry {
    /// The entry's unique id: its `guid` (RSS) or `id` (Atom), else its link.
    pub id: String,
    /// The entry's title, as text.
    pub title: String,
    /// The address of the entry's page (`link`; for Atom the `alternate` link).
    pub url: String,
    /// When it was published (RFC 3339), when the feed says and the date can be read.
    pub published: Option<String>,
    /// The summary or description, as the feed has it (may hold HTML).
    pub summary: String,
    /// The author's name or address, when given.
    pub author: Option<String>,
    /// Its categories (RSS `category`, Atom `category term`).
    pub categories: Vec<String>,
}

pub struct PollFeed;

impl PollingTrigger for PollFeed {
    type Config = Config;
    type Item = Entry;

    const ID: &'static str = "poll_feed";
    const NAME: &'static str = "New entries in an RSS or Atom feed";
    const DESCRIPTION: &'static str = "Checks an RSS or Atom feed (a blog, a podcast, a changelog) every few minutes and starts the recipe once for each new entry, oldest first. Entries already in the feed when the recipe is switched on do not start it.";

    fn sample() -> Entry {
        Entry {
            id: "https://blog.example.com/2026/11/winter-walks".into(),
            title: "Winter walks with your dog".into(),
            url: "https://blog.example.com/2026/11/winter-walks".into(),
            published: Some("2026-11-25T09:30:00+00:00".into()),
            summary: "Short days, cold paws: five tips for walks your dog will enjoy.".into(),
            author: Some("Ada Lovelace".into()),
            categories: vec!["dogs".into()],
        }
    }

    fn dedupe_key(item: &Entry) -> String {
        item.id.clone()
    }

    async fn poll(&self, ctx: &ActionContext, config: Config, _cursor: Option<String>) -> Result<PollPage<Entry>, ConnectorError> {
        let url = Url::parse(config.url.trim()).map_err(|e| {
            ConnectorError::bad_input(
                "url",
                format!("is not a valid address ({e}); write a full address like https://blog.example.com/feed.xml"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConnectorError::bad_input("url", format!("the scheme `{}` is not allowed; use http or https", url.scheme())));
        }
        let mut request = HttpRequest::new(Method::GET, url.to_string());
        request.timeout = Some(if ctx.timeout.is_zero() { POLL_TIMEOUT } else { POLL_TIMEOUT.min(ctx.timeout) });
        enlace_kit::apply_credentials(&mut request, &ctx.credentials)?;
        request.headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8"),
        );
        let response = ctx.http.send(request).await.map_err(|e| enlace_kit::transport_error(e, true))?;
        let response = enlace_kit::classify(response)?;
        let mut entries = parse(&response.body)?;
        if entries.iter().all(|e| e.published.is_some()) {
            // Newest first; RFC 3339 in one offset would sort as text, but feeds mix offsets.
            entries.sort_by_key(|e| std::cmp::Reverse(e.published.as_deref().and_then(|p| DateTime::parse_from_rfc3339(p).ok())));
        }
        entries.truncate(MAX_ITEMS);
        Ok(PollPage { items: entries, cursor: None })
    }
}

/// The entries of an RSS 2.0, RSS 1.0 or Atom document, in the document's order.
pub fn parse(body: &[u8]) -> Result<Vec<Entry>, ConnectorError> {
    let mut reader = Reader::from_reader(body);
    // Text is kept whole (entities split it into pieces); fields are trimmed at the end.
    let mut buf = vec![];
    let mut entries = vec![];
    // The entry being read, and the element path inside it.
    let mut current: Option<Draft> = None;
    let mut path: Vec<String> = vec![];
    let mut root: Option<String> = None;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            ConnectorError::permanent(format!(
                "the feed is not well-formed XML (at byte {}: {e}); check that the address answers an RSS or Atom feed",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(ref s) => {
                let name = local(s);
                if root.is_none() {
                    root = Some(name.clone());
                }
                if current.is_none() && (name == "item" || name == "entry") {
                    current = Some(Draft::default());
                    path.clear();
                } else if let Some(d) = current.as_mut() {
                    path.push(name.clone());
                    if path.len() == 1 {
                        d.attributes(&name, s);
                    }
                }
            }
            Event::Empty(ref s) => {
                if let Some(d) = current.as_mut()
                    && path.is_empty()
                {
                    d.attributes(&local(s), s);
                }
            }
            Event::Text(t) => {
                if let Some(d) = current.as_mut() {
                    let text = t.decode().map_err(|e| ConnectorError::permanent(format!("the feed has text that cannot be read: {e}")))?;
                    d.text(&path, &text);
                }
            }
            Event::CData(c) => {
                if let Some(d) = current.as_mut() {
                    d.text(&path, &String::from_utf8_lossy(&c.into_inner()));
                }
            }
            Event::GeneralRef(r) => {
                // An entity in the text (`&amp;`, `&#8217;`): resolved and appended.
                if let Some(d) = current.as_mut() {
                    let resolved = r
                        .resolve_char_ref()
                        .ok()
                        .flatten()
                        .map(String::from)
                        .or_else(|| {
                            let name = String::from_utf8_lossy(&r).to_string();
                            quick_xml::escape::resolve_predefined_entity(&name).map(str::to_string)
                        })
                        .unwrap_or_default();
                    d.text(&path, &resolved);
                }
            }
            Event::End(ref e) if current.is_some() => {
                if !path.is_empty() {
                    path.pop();
                } else if matches!(e.local_name().as_ref(), b"item" | b"entry")
                    && let Some(entry) = current.take().and_then(Draft::finish)
                {
                    entries.push(entry);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    match root.as_deref() {
        Some("rss" | "feed" | "RDF") => Ok(entries),
        Some(other) => Err(ConnectorError::permanent(format!(
            "the address answered an XML document of kind `<{other}>`, not a feed: give the feed's own address (RSS `<rss>` or Atom `<feed>`)"
        ))),
        None => Err(ConnectorError::permanent("the feed is empty: the address answered no XML; give the feed's own address")),
    }
}

fn local(s: &BytesStart) -> String {
    String::from_utf8_lossy(s.local_name().as_ref()).to_string()
}

#[derive(Default)]
struct Draft {
    guid: String,
    title: String,
    link: String,
    date: String,
    summary: String,
    content: String,
    author: String,
    categories: Vec<String>,
}

impl Draft {
    /// Attributes of a direct child (`<link href rel>`, `<category term>`).
    fn attributes(&mut self, name: &str, s: &BytesStart) {
        let attr = |key: &str| {
            s.attributes()
                .flatten()
                .find(|a| a.key.local_name().as_ref() == key.as_bytes())
                .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
                .map(|v| v.to_string())
        };
        match name {
            "link" => {
                let rel = attr("rel").unwrap_or_else(|| "alternate".into());
                if let Some(href) = attr("href")
                    && rel == "alternate"
                    && self.link.is_empty()
                {
                    self.link = href;
                }
            }
            "category" => {
                if let Some(term) = attr("term") {
                    self.categories.push(term);
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, path: &[String], text: &str) {
        let field = match path {
            [one] => match one.as_str() {
                "guid" | "id" => &mut self.guid,
                "title" => &mut self.title,
                "link" => &mut self.link,
                "pubDate" | "published" | "date" => &mut self.date,
                "updated" if self.date.is_empty() => &mut self.date,
                "description" | "summary" => &mut self.summary,
                "content" | "encoded" => &mut self.content,
                "author" | "creator" => &mut self.author,
                "category" | "subject" => {
                    self.categories.push(text.trim().to_string());
                    return;
                }
                _ => return,
            },
            [parent, child] if parent == "author" && (child == "name" || child == "email") && self.author.is_empty() => &mut self.author,
            _ => return,
        };
        field.push_str(text);
    }

    fn finish(self) -> Option<Entry> {
        let title = self.title.trim().to_string();
        let url = self.link.trim().to_string();
        let published = date(self.date.trim()).map(|d| d.to_rfc3339());
        let id = [self.guid.trim(), url.as_str()]
            .into_iter()
            .find(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| (!title.is_empty()).then(|| format!("{title}|{}", published.clone().unwrap_or_default())))?;
        let summary = if self.summary.trim().is_empty() { self.content } else { self.summary };
        Some(Entry {
            id,
            title,
            url,
            published,
            summary: summary.trim().to_string(),
            author: Some(self.author.trim().to_string()).filter(|a| !a.is_empty()),
            categories: self.categories.into_iter().filter(|c| !c.is_empty()).collect(),
        })
    }
}

/// RSS dates are RFC 822 (`Tue, 25 Nov 2026 09:30:00 GMT`), Atom and Dublin Core RFC 3339.
fn date(s: &str) -> Option<DateTime<FixedOffset>> {
    if s.is_empty() {
        return None;
    }
    DateTime::parse_from_rfc3339(s).ok().or_else(|| DateTime::parse_from_rfc2822(s).ok()).or_else(|| {
        // Feeds get the weekday wrong often enough ("Tue, 25 Nov 2026" for a Wednesday);
        // the date itself decides.
        s.split_once(", ").and_then(|(_, rest)| DateTime::parse_from_rfc2822(rest).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>Pets blog</title><link>https://blog.example.com/</link>
<item>
  <title>Cats &amp; heat: keeping cool</title>
  <link>https://blog.example.com/cats-and-heat</link>
  <guid isPermaLink="false">post-17</guid>
  <pubDate>Tue, 24 Nov 2026 08:00:00 +0100</pubDate>
  <dc:creator>Grace Hopper</dc:creator>
  <category>cats</category><category>summer</category>
  <description><![CDATA[<p>Five ways to help your cat in the heat.</p>]]></description>
</item>
<item>
  <title>Winter walks with your dog</title>
  <link>https://blog.example.com/winter-walks</link>
  <pubDate>Wed, 25 Nov 2026 09:30:00 GMT</pubDate>
  <content:encoded>Short days, cold paws&#8230;</content:encoded>
</item>
</channel></rss>"#;

    const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Changelog</title>
  <link href="https://example.com/"/>
  <entry>
    <title type="text">Version 2.1</title>
    <link rel="self" href="https://example.com/feed/21"/>
    <link href="https://example.com/releases/2.1"/>
    <id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id>
    <updated>2026-11-25T10:00:00Z</updated>
    <author><name>Ada</name></author>
    <category term="release"/>
    <summary>Faster imports.</summary>
  </entry>
</feed>"#;

    #[test]
    fn reads_rss_entries_with_entities_cdata_and_namespaces() {
        let e = parse(RSS.as_bytes()).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].id, "post-17");
        assert_eq!(e[0].title, "Cats & heat: keeping cool");
        assert_eq!(e[0].url, "https://blog.example.com/cats-and-heat");
        assert_eq!(e[0].published.as_deref(), Some("2026-11-24T08:00:00+01:00"));
        assert_eq!(e[0].author.as_deref(), Some("Grace Hopper"));
        assert_eq!(e[0].categories, vec!["cats", "summer"]);
        assert_eq!(e[0].summary, "<p>Five ways to help your cat in the heat.</p>");
        // No guid: the link is the id; content:encoded stands in for a missing description.
        assert_eq!(e[1].id, "https://blog.example.com/winter-walks");
        assert_eq!(e[1].summary, "Short days, cold paws\u{2026}");
        assert_eq!(e[1].published.as_deref(), Some("2026-11-25T09:30:00+00:00"));
    }

    #[test]
    fn reads_atom_entries_with_the_alternate_link() {
        let e = parse(ATOM.as_bytes()).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].id, "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a");
        assert_eq!(e[0].url, "https://example.com/releases/2.1");
        assert_eq!(e[0].title, "Version 2.1");
        assert_eq!(e[0].author.as_deref(), Some("Ada"));
        assert_eq!(e[0].categories, vec!["release"]);
        assert_eq!(e[0].published.as_deref(), Some("2026-11-25T10:00:00+00:00"));
    }

    #[test]
    fn dates_in_both_formats_and_a_wrong_weekday() {
        assert_eq!(date("2026-11-25T10:00:00Z").unwrap().to_rfc3339(), "2026-11-25T10:00:00+00:00");
        assert_eq!(date("Wed, 25 Nov 2026 09:30:00 GMT").unwrap().to_rfc3339(), "2026-11-25T09:30:00+00:00");
        assert_eq!(date("Tue, 25 Nov 2026 09:30:00 +0100").unwrap().to_rfc3339(), "2026-11-25T09:30:00+01:00");
        assert!(date("yesterday").is_none());
    }

    #[test]
    fn refuses_what_is_not_a_feed_with_a_plain_reason() {
        let err = parse(b"<html><body>Not here</body></html>").unwrap_err().to_string();
        assert!(err.contains("`<html>`") && err.contains("feed's own address"), "{err}");
        let err = parse(b"<rss><channel><item><title>a</title></channel></rss>").unwrap_err().to_string();
        assert!(err.contains("not well-formed XML"), "{err}");
        let err = parse(b"").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
