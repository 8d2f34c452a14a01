//! The console's languages and message catalogue.
//!
//! Messages live in `messages.toml` beside this file (one table per language, the same
//! keys in each; a unit test keeps them in step and checks that every key a template
//! asks for exists). The file is parsed with the `toml` crate at first use and embedded
//! in the binary. Templates ask for a message with `t("key")`; `{name}` placeholders
//! are filled from keyword arguments: `t("login.retry", seconds=42)`.
//!
//! Which language a request gets, first match wins:
//! 1. `?lang=zh` or `?lang=en` on the URL (the language switch links); the choice is
//!    remembered in the `feegate_lang` cookie for a year;
//! 2. the `feegate_lang` cookie;
//! 3. the browser's `Accept-Language`: the first of its tags that is `zh…` or `en…`;
//! 4. Chinese.

use axum::http::header;
use axum::http::request::Parts;
use axum_extra::extract::cookie::CookieJar;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The cookie that remembers the language switch.
pub const LANG_COOKIE: &str = "feegate_lang";

/// A console language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// `zh` or `en`: the catalogue table, the `lang` parameter and the HTML `lang`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// `zh`, `zh-CN`, `en-GB`… → the language; anything else → None.
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The `?lang=` parameter of a query string, if it names a language.
    pub fn from_query(query: Option<&str>) -> Option<Lang> {
        query?
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "lang")
            .and_then(|(_, v)| Lang::parse(v))
    }

    /// The first language of an `Accept-Language` header we have, in the header's order
    /// of preference (`q` weights honoured; ties keep the header's order).
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut tags: Vec<(f32, usize, &str)> = header
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut it = part.split(';');
                let tag = it.next()?.trim();
                let q = it
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q > 0.0).then_some((q, i, tag))
            })
            .collect();
        tags.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        tags.into_iter().find_map(|(_, _, t)| Lang::parse(t))
    }

    /// The language of a request (the order in the module documentation).
    pub fn of_request(parts: &Parts) -> Lang {
        if let Some(l) = Lang::from_query(parts.uri.query()) {
            return l;
        }
        let jar = CookieJar::from_headers(&parts.headers);
        if let Some(l) = jar.get(LANG_COOKIE).and_then(|c| Lang::parse(c.value())) {
            return l;
        }
        parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(Lang::from_accept_language)
            .unwrap_or(Lang::Zh)
    }
}

/// The message catalogue: language code → key → text.
pub struct Catalogue {
    tables: BTreeMap<String, BTreeMap<String, String>>,
}

static SOURCE: &str = include_str!("messages.toml");

/// The embedded catalogue, parsed once. A malformed file fails the unit tests, so the
/// `expect` cannot fire in a tested build.
pub static CATALOGUE: LazyLock<Catalogue> =
    LazyLock::new(|| Catalogue::parse(SOURCE).expect("console/messages.toml parses"));

impl Catalogue {
    /// Parses a catalogue: top-level tables named by language code, string values.
    pub fn parse(text: &str) -> Result<Catalogue, String> {
        let tables: BTreeMap<String, BTreeMap<String, String>> =
            toml::from_str(text).map_err(|e| format!("messages.toml: {e}"))?;
        Ok(Catalogue { tables })
    }

    /// The text of `key` in `lang`; the key itself (visible, so a missing message is
    /// noticed) when there is none.
    pub fn get(&self, lang: Lang, key: &str) -> String {
        self.tables
            .get(lang.code())
            .and_then(|t| t.get(key))
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }

    /// The keys of one language.
    pub fn keys(&self, lang: Lang) -> Vec<&str> {
        self.tables
            .get(lang.code())
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// Fills `{name}` placeholders of `text` from `args`.
pub fn fill(text: &str, args: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in args {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_comes_from_the_parameter_then_the_cookie_then_the_browser_then_chinese() {
        let req = |uri: &str, headers: &[(&str, &str)]| {
            let mut b = axum::http::Request::builder().uri(uri);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Lang);
        let cases: [Case; 7] = [
            ("/console/", &[], Lang::Zh),
            (
                "/console/?lang=en",
                &[("cookie", "feegate_lang=zh")],
                Lang::En,
            ),
            (
                "/console/?a=1&lang=zh",
                &[("accept-language", "en")],
                Lang::Zh,
            ),
            ("/console/", &[("cookie", "feegate_lang=en")], Lang::En),
            (
                "/console/",
                &[("accept-language", "fr-FR, en-GB;q=0.8, zh;q=0.9")],
                Lang::Zh,
            ),
            (
                "/console/",
                &[("accept-language", "de, en-US;q=0.5")],
                Lang::En,
            ),
            ("/console/?lang=fr", &[("accept-language", "ja")], Lang::Zh),
        ];
        for (uri, headers, want) in cases {
            assert_eq!(
                Lang::of_request(&req(uri, headers)),
                want,
                "{uri} {headers:?}"
            );
        }
    }

    #[test]
    fn both_languages_have_the_same_messages_and_every_template_key_exists() {
        let c = Catalogue::parse(SOURCE).unwrap();
        let (zh, en) = (c.keys(Lang::Zh), c.keys(Lang::En));
        assert!(!zh.is_empty());
        assert_eq!(zh, en, "messages.toml: zh and en must have the same keys");
        for (name, text) in super::super::templates::SOURCES {
            let mut rest = *text;
            while let Some(i) = rest.find("t(\"") {
                rest = &rest[i + 3..];
                let key = &rest[..rest.find('"').unwrap()];
                assert!(
                    zh.contains(&key),
                    "template {name} asks for message {key:?}, missing from messages.toml"
                );
            }
        }
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(
            fill("try again in {seconds} s", &[("seconds", "42".into())]),
            "try again in 42 s"
        );
    }
}
