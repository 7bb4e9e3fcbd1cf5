//! Tenants: the provider's customers, each seeing only its own endpoints, events and
//! deliveries. Pure: validation and the scope every confined store call takes.

use std::fmt;

/// A tenant's id: the provider's own key for a customer, 1 to 64 characters from
/// `A-Z a-z 0-9 . _ : -`. Absent (no tenant) is the provider-wide tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

/// Why a text is not a tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant_id must be 1 to 64 characters from A-Z a-z 0-9 . _ : - ({0})")]
pub struct InvalidTenantId(&'static str);

impl TenantId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(text: &str) -> Result<TenantId, InvalidTenantId> {
        if text.is_empty() {
            return Err(InvalidTenantId("it is empty"));
        }
        if text.len() > Self::MAX_LEN {
            return Err(InvalidTenantId("it is longer"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(InvalidTenantId("it has other characters"));
        }
        Ok(TenantId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A tenant id read back from the database, where only valid ones are written.
    pub(crate) fn stored(text: String) -> TenantId {
        TenantId(text)
    }
}

impl<'de> serde::Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TenantId::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whose rows a store call may read or change: everything (the admin token, or an open
/// API), or one tenant's only. Confined calls take it as an argument and build it into
/// their SQL, so a handler cannot forget it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Tenant(TenantId),
}

impl Scope {
    /// The tenant the scope is confined to, if any.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Scope::Admin => None,
            Scope::Tenant(t) => Some(t),
        }
    }

    /// `filter` confined to this scope: a tenant scope replaces the filter's tenant with
    /// its own (a caller asking for another tenant's rows is refused before this).
    pub fn confine(&self, filter: &crate::DeliveryFilter) -> crate::DeliveryFilter {
        let mut f = filter.clone();
        if let Scope::Tenant(t) = self {
            f.tenant_id = Some(t.clone());
        }
        f
    }

    /// Whether a row of `owner` (its `tenant_id`) is visible in this scope.
    pub fn sees(&self, owner: Option<&TenantId>) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Tenant(t) => owner == Some(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        let ok = ["a", "merchant_42", "acme.eu:prod-1", &"x".repeat(64)];
        for text in ok {
            assert_eq!(TenantId::parse(text).unwrap().as_str(), text, "{text}");
        }
        let bad = [
            ("", "it is empty"),
            (&"x".repeat(65), "it is longer"),
            ("a b", "it has other characters"),
            ("a/b", "it has other characters"),
            ("é", "it has other characters"),
            ("a\n", "it has other characters"),
        ];
        for (text, why) in bad {
            assert_eq!(TenantId::parse(text), Err(InvalidTenantId(why)), "{text:?}");
        }
    }

    #[test]
    fn scopes() {
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let cases = [
            (Scope::Admin, None, true),
            (Scope::Admin, Some(&a), true),
            (Scope::Tenant(a.clone()), Some(&a), true),
            (Scope::Tenant(a.clone()), Some(&b), false),
            (Scope::Tenant(a.clone()), None, false),
        ];
        for (scope, owner, sees) in cases {
            assert_eq!(scope.sees(owner), sees, "{scope:?} {owner:?}");
        }
    }
}
