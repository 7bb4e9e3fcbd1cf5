//! Reading request headers, whatever the receiver's framework keeps them in.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// Request headers, looked up by name without regard to case.
///
/// Implemented for lists of pairs (`[(&str, &str)]`, `[(K, V); N]`, `Vec<(K, V)>`), for
/// `HashMap` and `BTreeMap` of strings, for a lookup closure through [`header_fn`], and,
/// with the `http` feature, for `http::HeaderMap` (axum, hyper, reqwest).
///
/// When a name occurs more than once, the first value counts.
pub trait Headers {
    /// The value of the header `name` (given in lower case), or `None`.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl<T: Headers + ?Sized> Headers for &T {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        (**self).header(name)
    }
}

fn find<'a, K, V>(
    mut pairs: impl Iterator<Item = (&'a K, &'a V)>,
    name: &str,
) -> Option<Cow<'a, str>>
where
    K: AsRef<str> + ?Sized + 'a,
    V: AsRef<str> + ?Sized + 'a,
{
    pairs
        .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
        .map(|(_, v)| Cow::Borrowed(v.as_ref()))
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for [(K, V)] {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        find(self.iter().map(|(k, v)| (k, v)), name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Headers for [(K, V); N] {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.as_slice().header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.as_slice().header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, S: BuildHasher> Headers for HashMap<K, V, S> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        find(self.iter(), name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for BTreeMap<K, V> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        find(self.iter(), name)
    }
}

/// Headers read through a closure: `header_fn(|name| request.header(name).map(String::from))`.
/// The closure is given the header name in lower case.
pub fn header_fn<F>(lookup: F) -> HeaderFn<F>
where
    F: Fn(&str) -> Option<String>,
{
    HeaderFn(lookup)
}

/// See [`header_fn`].
#[derive(Clone, Copy, Debug)]
pub struct HeaderFn<F>(pub F);

impl<F> Headers for HeaderFn<F>
where
    F: Fn(&str) -> Option<String>,
{
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        (self.0)(name).map(Cow::Owned)
    }
}

#[cfg(feature = "http")]
impl Headers for http::HeaderMap {
    /// A value that is not visible ASCII counts as absent.
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name)
            .and_then(|v| v.to_str().ok())
            .map(Cow::Borrowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case() {
        let pairs = [("Webhook-ID", "a"), ("webhook-id", "b")];
        assert_eq!(pairs.header("webhook-id").as_deref(), Some("a"));
        assert_eq!(pairs[..].header("WEBHOOK-ID").as_deref(), Some("a"));
        assert_eq!(pairs.header("webhook-timestamp"), None);

        let owned = vec![("Content-Type".to_string(), "application/json".to_string())];
        assert_eq!(
            owned.header("content-type").as_deref(),
            Some("application/json")
        );

        let map: HashMap<String, String> = [("X-One".to_string(), "1".to_string())].into();
        assert_eq!(map.header("x-one").as_deref(), Some("1"));
        let tree: BTreeMap<&str, &str> = [("X-Two", "2")].into();
        assert_eq!(tree.header("x-two").as_deref(), Some("2"));

        let f = header_fn(|name| (name == "x-three").then(|| "3".to_string()));
        assert_eq!(f.header("x-three").as_deref(), Some("3"));
        assert_eq!(f.header("x-four"), None);
    }

    #[cfg(feature = "http")]
    #[test]
    fn header_map() {
        let mut map = http::HeaderMap::new();
        map.insert("Webhook-Id", http::HeaderValue::from_static("msg_1"));
        assert_eq!(map.header("webhook-id").as_deref(), Some("msg_1"));
        assert_eq!(
            Headers::header(&map, "WEBHOOK-ID").as_deref(),
            Some("msg_1")
        );
    }
}
