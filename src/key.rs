//! Cache keys: a namespace and components, rendered so that user input
//! cannot forge another key.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The separator between components in a rendered key.
const SEP: char = ':';
/// Longest rendered key kept as-is; longer ones are hashed. 250 bytes is the
/// memcached limit, so keys stay portable to the smallest common backend.
pub const MAX_KEY_LEN: usize = 250;
/// The namespace used by [`Key::new`] and [`Key::parse`].
pub const DEFAULT_NAMESPACE: &str = "gensync";

/// A validated, canonical cache key.
///
/// A key is a namespace followed by one or more components. Components are
/// trimmed of surrounding whitespace, empty ones are dropped, and the
/// separator `:` (and the escape character `%`) inside a component is
/// percent-escaped, so `["a:b", "c"]` and `["a", "b:c"]` are different keys.
/// Braces are escaped too, so a key never carries a Redis Cluster hash tag
/// of its own and its [companions](Key::companion) share its slot.
/// A key longer than [`MAX_KEY_LEN`] bytes, or holding bytes a backend or a
/// log line should not carry (whitespace, control characters, non-ASCII),
/// is replaced by `NAMESPACE:%sha256:<hex digest>`.
///
/// ```
/// use gensync::Key;
///
/// let key = Key::new(["site", "settings"]).unwrap();
/// assert_eq!(key.as_str(), "gensync:site:settings");
/// // Surrounding whitespace and stray separators make no other key.
/// assert_eq!(Key::parse(" site:settings: ").unwrap(), key);
/// // A separator inside a component cannot forge another key.
/// assert_ne!(Key::new(["a:b", "c"]).unwrap(), Key::new(["a", "b:c"]).unwrap());
/// // Nothing left is an error, at construction.
/// assert!(Key::new(["  "]).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    rendered: String,
}

/// Why a key could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No component was left after trimming.
    #[error("the key is empty: give at least one non-blank component, such as \"site:settings\"")]
    Empty,
    /// The namespace was blank.
    #[error("the key namespace is empty: give a non-blank namespace or use Key::new")]
    EmptyNamespace,
}

impl Key {
    /// Builds a key in the [`DEFAULT_NAMESPACE`] from components.
    pub fn new<I, S>(components: I) -> Result<Self, KeyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Key::with_namespace(DEFAULT_NAMESPACE, components)
    }

    /// Builds a key in `namespace` from components.
    pub fn with_namespace<I, S>(namespace: &str, components: I) -> Result<Self, KeyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let namespace = namespace.trim();
        if namespace.is_empty() {
            return Err(KeyError::EmptyNamespace);
        }
        let parts: Vec<String> = components
            .into_iter()
            .map(|c| c.as_ref().trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut rendered = escape(namespace);
        for part in &parts {
            rendered.push(SEP);
            rendered.push_str(&escape(part));
        }
        if rendered.len() > MAX_KEY_LEN || !rendered.bytes().all(is_plain) {
            let digest = Sha256::digest(rendered.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            // `%sha256` cannot be a component: `%` in input is always escaped.
            rendered = format!("{}:%sha256:{hex}", escape_plain(namespace));
        }
        Ok(Key { rendered })
    }

    /// Parses `"site:settings"` style text into a key in the default
    /// namespace: split on `:`, each part trimmed, empty parts dropped.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Key::new(text.split(SEP))
    }

    /// A companion key for bookkeeping beside this one (the writers' lease,
    /// its fencing token, pending intents): `{<key>}:%<name>`.
    ///
    /// The braces make this key's whole text the companion's Redis Cluster
    /// hash tag, so both live on one slot and one script can touch both. No
    /// user key can collide with it: a rendered key never starts with `{`.
    ///
    /// ```
    /// let key = gensync::Key::parse("site:settings").unwrap();
    /// assert_eq!(key.companion("lock").as_str(), "{gensync:site:settings}:%lock");
    /// ```
    pub fn companion(&self, name: &str) -> Key {
        Key {
            rendered: format!("{{{}}}:%{name}", self.rendered),
        }
    }

    /// The rendered key, as sent to the backend.
    pub fn as_str(&self) -> &str {
        &self.rendered
    }
}

/// Printable ASCII other than space: safe in a Redis key and a log line.
fn is_plain(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// The namespace as it appears in front of a hashed key: escaped, and with
/// anything unprintable replaced so the hashed form is always plain.
fn escape_plain(namespace: &str) -> String {
    let escaped = escape(namespace);
    if escaped.len() <= 64 && escaped.bytes().all(is_plain) {
        escaped
    } else {
        "gensync-ns".to_owned()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Key").field(&self.rendered).finish()
    }
}

impl FromStr for Key {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Key::parse(s)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_inside_components_do_not_collide() {
        let a = Key::new(["a:b", "c"]).unwrap();
        let b = Key::new(["a", "b:c"]).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "gensync:a%3Ab:c");
        assert_ne!(Key::new(["a%3Ab"]).unwrap(), Key::new(["a:b"]).unwrap());
    }

    #[test]
    fn canonical_forms_are_equal() {
        let k = Key::new(["site", "settings"]).unwrap();
        for text in [
            "site:settings",
            " site : settings ",
            "site:settings:",
            ":site::settings",
        ] {
            assert_eq!(Key::parse(text).unwrap(), k, "{text:?}");
        }
        assert_eq!(Key::new(["site", "settings", " "]).unwrap(), k);
    }

    #[test]
    fn empty_keys_are_refused() {
        assert_eq!(Key::new(Vec::<String>::new()), Err(KeyError::Empty));
        assert_eq!(Key::parse(" : :: "), Err(KeyError::Empty));
        assert_eq!(
            Key::with_namespace(" ", ["x"]),
            Err(KeyError::EmptyNamespace)
        );
    }

    #[test]
    fn long_keys_are_hashed_and_stay_distinct() {
        let long_a = "a".repeat(300);
        let long_b = format!("{}b", "a".repeat(299));
        let a = Key::new([&long_a]).unwrap();
        let b = Key::new([&long_b]).unwrap();
        assert!(a.as_str().starts_with("gensync:%sha256:"), "{a}");
        assert_eq!(a.as_str().len(), "gensync:%sha256:".len() + 64);
        assert_ne!(a, b);
        // Just under the limit stays readable.
        let short = Key::new(["x".repeat(MAX_KEY_LEN - "gensync:".len())]).unwrap();
        assert!(!short.as_str().contains("%sha256"));
    }

    #[test]
    fn unprintable_bytes_are_hashed() {
        for text in ["tab\there", "new\nline", "caf\u{e9}", "in side"] {
            let k = Key::new([text]).unwrap();
            assert!(k.as_str().contains("%sha256:"), "{text:?} -> {k}");
            assert!(k.as_str().bytes().all(is_plain));
        }
        assert_ne!(
            Key::new(["caf\u{e9}"]).unwrap(),
            Key::new(["cafe"]).unwrap()
        );
    }

    #[test]
    fn braces_are_escaped_so_companions_share_the_slot() {
        let k = Key::with_namespace("n{s}", ["a{b}", "}c{"]).unwrap();
        assert_eq!(k.as_str(), "n%7Bs%7D:a%7Bb%7D:%7Dc%7B");
        assert_eq!(k.companion("lock").as_str(), format!("{{{k}}}:%lock"));
    }

    #[test]
    fn namespaces_separate_keys() {
        let a = Key::with_namespace("app1", ["settings"]).unwrap();
        let b = Key::with_namespace("app2", ["settings"]).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "app1:settings");
    }
}
