//! Personal data taken out of text before it is logged (with `telemetry.log_content`):
//! e-mail addresses, card numbers, IP addresses and phone numbers become `[email]`,
//! `[card]`, `[ip]` and `[phone]`.

use std::sync::OnceLock;

use regex::Regex;

/// The patterns, most specific first (a card number is not a phone number).
fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        [
            (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "[email]"),
            (r"\b(?:\d[ -]?){12,18}\d\b", "[card]"),
            (
                r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
                "[ip]",
            ),
            (r"\b(?:[0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}\b", "[ip]"),
            (
                r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}[ .-]\d{2,4}[ .-]?\d{2,5}\b",
                "[phone]",
            ),
        ]
        .into_iter()
        // The patterns are constants: they compile (a test checks each).
        .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, r)))
        .collect()
    })
}

/// `text` with e-mail addresses, card numbers, IP addresses and phone numbers replaced.
pub fn scrub(text: &str) -> String {
    patterns()
        .iter()
        .fold(text.to_owned(), |t, (re, with)| re.replace_all(&t, *with).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(patterns().len(), 5);
    }

    #[test]
    fn replaces_personal_data_and_keeps_the_rest() {
        let t = "mail jane.doe@example.com, call +1 555 123 4567 or (030) 1234-5678, \
                 card 4111 1111 1111 1111, from 10.1.2.3 or 2001:db8:0:0:0:0:2:1; order 42 of 2026";
        let s = scrub(t);
        assert_eq!(
            s,
            "mail [email], call [phone] or [phone], card [card], from [ip] or [ip]; order 42 of 2026"
        );
    }
}
