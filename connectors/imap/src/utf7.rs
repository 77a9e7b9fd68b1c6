//! Folder names as IMAP writes them: "modified UTF-7" (RFC 3501, 5.1.3). Users write
//! `Rechnungen/März`; the server knows it as `Rechnungen/M&AOQ-rz`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// The name a user writes, as the server knows it.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = vec![];
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&STANDARD_NO_PAD.encode(bytes).replace('/', ","));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// A name the server gives, as users read it; a name that is not valid modified UTF-7 is
/// returned as it is.
pub fn decode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('-') else { return name.to_string() };
        let chunk = &after[..end];
        if chunk.is_empty() {
            out.push('&');
        } else {
            let Ok(bytes) = STANDARD_NO_PAD.decode(chunk.replace(',', "/")) else { return name.to_string() };
            if bytes.len() % 2 != 0 {
                return name.to_string();
            }
            let units: Vec<u16> = bytes.chunks(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect();
            match String::from_utf16(&units) {
                Ok(s) => out.push_str(&s),
                Err(_) => return name.to_string(),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        // RFC 3501's own example, and a few more.
        assert_eq!(encode("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-"), "~peter/mail/台北/日本語");
        assert_eq!(encode("Rechnungen/März"), "Rechnungen/M&AOQ-rz");
        assert_eq!(encode("Q&A"), "Q&-A");
        assert_eq!(decode("Q&-A"), "Q&A");
        assert_eq!(encode("INBOX"), "INBOX");
        for name in ["Reçus 📎", "[Gmail]/Alle Nachrichten", "Ünïcödé/ß&x"] {
            assert_eq!(decode(&encode(name)), name);
        }
        assert_eq!(decode("broken&AOQ"), "broken&AOQ");
    }
}
