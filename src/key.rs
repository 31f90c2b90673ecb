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

    /// The key rendered as `name`, a name the crate rendered itself (a
    /// tracked set's parent), to read it again.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn rendered(name: &str) -> Self {
        Key {
            rendered: name.to_owned(),
        }
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
    /// A [member](Key::member) key already carries its set's hash tag; its
    /// companions keep it: `<member>:%<name>`.
    ///
    /// ```
    /// let key = gensync::Key::parse("site:settings").unwrap();
    /// assert_eq!(key.companion("lock").as_str(), "{gensync:site:settings}:%lock");
    /// ```
    pub fn companion(&self, name: &str) -> Key {
        let rendered = if self.rendered.starts_with('{') {
            format!("{}:%{name}", self.rendered)
        } else {
            format!("{{{}}}:%{name}", self.rendered)
        };
        Key { rendered }
    }

    /// The key of one member of the set this key names (a tenant's
    /// settings under `tenants`): `{<key>}:@<id>`, with `id` escaped like a
    /// component, and hashed (`{<key>}:@%sha256:<hex>`) when too long or not
    /// plain printable ASCII.
    ///
    /// Every member carries this key's text as its Redis Cluster hash tag,
    /// so a member and this key (the set's parent generation) are read
    /// together in one command, and one tracking prefix
    /// ([`member_prefix`](Key::member_prefix)) covers every member. No
    /// member collides with this key's companions (`%`) or with another
    /// member's (an escaped id holds no `:`).
    ///
    /// ```
    /// let tenants = gensync::Key::parse("tenants").unwrap();
    /// let acme = tenants.member("acme").unwrap();
    /// assert_eq!(acme.as_str(), "{gensync:tenants}:@acme");
    /// assert!(acme.as_str().starts_with(&tenants.member_prefix()));
    /// assert!(tenants.member(" ").is_err());
    /// ```
    pub fn member(&self, id: &str) -> Result<Key, KeyError> {
        let id = id.trim();
        if id.is_empty() {
            return Err(KeyError::Empty);
        }
        let prefix = self.member_prefix();
        let escaped = escape(id);
        let rendered =
            if prefix.len() + escaped.len() > MAX_KEY_LEN || !escaped.bytes().all(is_plain) {
                let digest = Sha256::digest(id.as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("{prefix}%sha256:{hex}")
            } else {
                format!("{prefix}{escaped}")
            };
        Ok(Key { rendered })
    }

    /// What every [member](Key::member) key of this set starts with, and
    /// nothing else: `{<key>}:@`.
    pub fn member_prefix(&self) -> String {
        format!("{{{}}}:@", self.rendered)
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

    #[test]
    fn members_share_their_sets_slot_and_collide_with_nothing() {
        let set = Key::parse("tenants").unwrap();
        let a = set.member("acme").unwrap();
        assert_eq!(a.as_str(), "{gensync:tenants}:@acme");
        // The hash tag of a member, and of its companions, is the set's key.
        let tag = |k: &Key| {
            let s = k.as_str();
            let open = s.find('{').unwrap();
            let close = open + s[open..].find('}').unwrap();
            s[open + 1..close].to_owned()
        };
        assert_eq!(tag(&a), set.as_str());
        assert_eq!(tag(&a.companion("lock")), set.as_str());
        assert_eq!(
            a.companion("lock").as_str(),
            "{gensync:tenants}:@acme:%lock"
        );
        // Ids that look like separators, companions or other members.
        let tricky = ["a:b", "%lock", "a:%lock", "{x}", "@acme", "acme:%lock"];
        let mut all: Vec<String> = tricky
            .iter()
            .map(|id| set.member(id).unwrap().as_str().to_owned())
            .collect();
        all.push(a.as_str().to_owned());
        all.push(a.companion("lock").as_str().to_owned());
        all.push(set.companion("lock").as_str().to_owned());
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "{all:?}");
        for id in tricky {
            let m = set.member(id).unwrap();
            assert!(m.as_str().starts_with(&set.member_prefix()));
            assert_eq!(m.as_str().matches('}').count(), 1, "{m}");
        }
    }

    #[test]
    fn long_or_unprintable_member_ids_are_hashed_under_the_prefix() {
        let set = Key::parse("tenants").unwrap();
        for id in [
            "x".repeat(400),
            "caf\u{e9}".into(),
            "a b".into(),
            "a\u{7}b".into(),
        ] {
            let m = set.member(&id).unwrap();
            assert!(m.as_str().starts_with("{gensync:tenants}:@%sha256:"), "{m}");
            assert!(m.as_str().len() <= MAX_KEY_LEN);
            assert!(m.as_str().bytes().all(is_plain));
        }
        assert_ne!(set.member("a b").unwrap(), set.member("a  b").unwrap());
    }
}
