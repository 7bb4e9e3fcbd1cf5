//! Endpoints whose sealed secrets this store cannot decrypt.

use super::*;

hookd_testkit::each_backend!(an_endpoint_that_cannot_be_unsealed_is_read_as_unreadable,);

/// A stand-in for the daemon's AES-GCM sealer: `sealed:<key>:<context>:<text reversed>`,
/// opened only with the same key and context.
struct KeySealer(&'static str);

impl Sealer for KeySealer {
    fn seal(&self, plaintext: &str, context: &str) -> String {
        let reversed: String = plaintext.chars().rev().collect();
        format!("sealed:{}:{context}:{reversed}", self.0)
    }

    fn open(&self, sealed: &str, context: &str) -> Result<String, String> {
        let prefix = format!("sealed:{}:{context}:", self.0);
        let reversed = sealed.strip_prefix(&prefix).ok_or("wrong key")?;
        Ok(reversed.chars().rev().collect())
    }
}

async fn sealed_with(db: &TestDb, key: Option<&'static str>) -> Arc<dyn Store> {
    let sealer = key.map(|k| Arc::new(KeySealer(k)) as Arc<dyn Sealer>);
    connect_sealed(&db.url, sealer).await.expect("connect")
}

/// The endpoints of `claimed`, each with whether it came back unreadable.
fn unreadable_marks(claimed: &[Claimed]) -> Vec<(String, bool)> {
    let mut marks: Vec<(String, bool)> = claimed
        .iter()
        .map(|c| (c.endpoint.id.to_string(), c.endpoint.unreadable.is_some()))
        .collect();
    marks.sort();
    marks
}

async fn an_endpoint_that_cannot_be_unsealed_is_read_as_unreadable(backend: Backend) {
    let db = TestDb::new(backend).await;
    let a = sealed_with(&db, Some("key-a")).await;
    a.migrate().await.unwrap();
    let mut sealed = endpoint("ep_a", &["*"]);
    sealed.bearer_token = Some("tok-a".into());
    a.insert_endpoint(&sealed).await.unwrap();
    let b = sealed_with(&db, Some("key-b")).await;
    b.insert_endpoint(&endpoint("ep_b", &["*"])).await.unwrap();
    // Written before sealing was turned on: plaintext, readable by every store.
    let keyless = sealed_with(&db, None).await;
    add_endpoint(&keyless, "ep_c", &["*"]).await;

    // With key b, ep_a's secrets do not open: it reads as unreadable, blanked, and no
    // read of it fails.
    let e = b.endpoint(&"ep_a".into()).await.unwrap().unwrap();
    let why = e.unreadable.clone().expect("unreadable with another key");
    assert!(why.contains("wrong key"), "{why}");
    assert_eq!(
        (
            e.secret.as_str(),
            e.bearer_token.as_deref(),
            e.previous_secret.as_deref()
        ),
        ("", Some(""), None)
    );
    let listed = b.endpoints(None, 10).await.unwrap();
    let marks: Vec<(&str, bool)> = listed
        .iter()
        .map(|e| (e.id.as_str(), e.unreadable.is_some()))
        .collect();
    assert_eq!(marks, [("ep_a", true), ("ep_b", false), ("ep_c", false)]);
    assert_eq!(listed[1].secret, sealed.secret, "ep_b opens with its key");
    assert_eq!(
        b.unreadable_endpoints().await.unwrap(),
        [("ep_a".into(), why.clone())]
    );
    // Without a key, every endpoint holding a sealed value.
    let without_key = keyless.unreadable_endpoints().await.unwrap();
    let ids: Vec<&str> = without_key.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["ep_a", "ep_b"]);
    assert!(
        without_key[0].1.contains("HOOKD_SECRET_KEY"),
        "{without_key:?}"
    );

    // A claim and a leasing ingest holding it succeed; only its deliveries carry the mark.
    b.enqueue_event(&event(Some("e1"), "purchase"), &limits())
        .await
        .unwrap();
    let claimed = b.claim(10, 60_000).await.unwrap();
    let expected = [
        ("ep_a".to_string(), true),
        ("ep_b".to_string(), false),
        ("ep_c".to_string(), false),
    ];
    assert_eq!(unreadable_marks(&claimed), expected);
    db.exec("INSERT INTO hookd_outbox (event_type, payload) VALUES ('purchase', '{}')")
        .await;
    let ingested = ingest_to_room(&b, 500, 10).await;
    assert_eq!(unreadable_marks(&ingested.claimed), expected);

    // An update of its other fields keeps the sealed values it could not read.
    let mut changed = e.clone();
    changed.description = Some("changed".into());
    let updated = b.update_endpoint(&changed).await.unwrap().unwrap();
    assert_eq!(updated.description.as_deref(), Some("changed"));
    assert_eq!(updated.unreadable, Some(why));
    let back = a.endpoint(&"ep_a".into()).await.unwrap().unwrap();
    assert_eq!(back.unreadable, None);
    assert_eq!(
        (back.secret.as_str(), back.bearer_token.as_deref()),
        (sealed.secret.as_str(), Some("tok-a")),
        "intact under the key they were sealed with"
    );
    assert_eq!(back.description.as_deref(), Some("changed"));

    // Replacing every secret (no longer marked unreadable) seals them under key b.
    let mut replaced = updated;
    replaced.unreadable = None;
    replaced.secret = "whsec_MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=".into();
    replaced.bearer_token = None;
    let rekeyed = b.update_endpoint(&replaced).await.unwrap().unwrap();
    assert_eq!(rekeyed.unreadable, None);
    assert_eq!(rekeyed.secret, replaced.secret);
    assert_eq!(rekeyed.bearer_token, None);
    assert!(b.unreadable_endpoints().await.unwrap().is_empty());
    assert!(a
        .endpoint(&"ep_a".into())
        .await
        .unwrap()
        .unwrap()
        .unreadable
        .is_some());

    // Deleted endpoints are not counted.
    assert!(b.delete_endpoint(&"ep_b".into()).await.unwrap());
    let ids: Vec<String> = keyless
        .unreadable_endpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.into())
        .collect();
    assert_eq!(ids, ["ep_a"]);
}
