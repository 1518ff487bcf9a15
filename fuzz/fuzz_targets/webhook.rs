//! Webhook payloads: the bytes of a GitHub or GitLab hook's body through the signature check,
//! the form decoding and the push decision (`hooks::read_push`).
//!
//! Properties: no panic; the body's own HMAC is accepted and any other signature refused; the
//! token check is equality; a fetch is decided only for a JSON object whose `ref` is the config
//! branch and whose `object_kind` (if any) is `push`; a payload sent as a form decides the same.

#![no_main]

use hmac::{Hmac, Mac};
use jobkeeper::http::api::constant_time_eq;
use jobkeeper::http::hooks::{PushVerdict, github_form_payload, github_signature_ok, read_push};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"It's a Secret to Everybody";

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn check_verdict(body: &[u8], branch: &str) -> PushVerdict {
    let verdict = read_push(body, branch);
    // Only an object is read (unknown fields are skipped unchecked, so the rest of the body need
    // not be strict JSON); when it is strict JSON, a fetch agrees with its fields.
    let object = body.trim_ascii_start().first() == Some(&b'{');
    match &verdict {
        PushVerdict::Fetch(git_ref) => {
            assert!(object, "a fetch from a body that is not an object");
            assert_eq!(*git_ref, format!("refs/heads/{branch}"));
            if let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(body) {
                assert_eq!(
                    obj.get("ref").and_then(|r| r.as_str()),
                    Some(git_ref.as_str())
                );
                let kind = obj.get("object_kind");
                assert!(
                    matches!(kind, None | Some(serde_json::Value::Null))
                        || kind.and_then(|k| k.as_str()) == Some("push"),
                    "a fetch for object_kind {kind:?}"
                );
            }
        }
        PushVerdict::Ignore(what) => assert!(object, "ignored ({what}) but not an object"),
        PushVerdict::Malformed(why) => assert!(!why.is_empty()),
    }
    verdict
}

fuzz_target!(|data: &[u8]| {
    // The signature check: the body's own HMAC passes (hex in either case), nothing else does.
    let good = sign(SECRET, data);
    assert!(github_signature_ok(SECRET, data, &good));
    assert!(github_signature_ok(
        SECRET,
        data,
        &good.to_uppercase().replace("SHA256=", "sha256=")
    ));
    assert!(!github_signature_ok(b"another secret", data, &good));
    let key = &data[..data.len().min(16)];
    assert!(github_signature_ok(key, data, &sign(key, data)));
    // The body's first line taken as a signature header.
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    if let Ok(header) = std::str::from_utf8(first)
        && github_signature_ok(SECRET, data, header)
    {
        assert_eq!(header.trim().to_ascii_lowercase(), good);
    }
    // The GitLab token check is equality.
    assert!(constant_time_eq(data, data));
    assert_eq!(constant_time_eq(key, data), key == data);

    // The push decision, for two config branches.
    let main = check_verdict(data, "main");
    let _ = check_verdict(data, "release/1.x");
    // The same payload sent as a form decides the same.
    if let Ok(text) = std::str::from_utf8(data) {
        let form = serde_urlencoded::to_string([("payload", text)]).expect("encodes");
        assert_eq!(github_form_payload(form.as_bytes()), data);
        assert_eq!(
            read_push(&github_form_payload(form.as_bytes()), "main"),
            main
        );
    }
    // The body taken as a form.
    let _ = check_verdict(&github_form_payload(data), "main");
});
