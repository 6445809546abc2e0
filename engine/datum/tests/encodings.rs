//! The key encoding must order exactly as RethinkDB's comparator, and both
//! byte forms must round-trip every value.

use std::cmp::Ordering;

use photondb_datum::{document, json, key, Datum, Object};
use proptest::prelude::*;

fn any_number() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |value| value.is_finite()),
        (-5i64..5).prop_map(|value| value as f64),
        Just(0.0),
        Just(-0.0),
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    // Small alphabets make shared prefixes (and so the escaping rules) common.
    prop_oneof!["[ab\u{0}\u{1}é]{0,4}", any::<String>()]
}

fn any_datum() -> impl Strategy<Value = Datum> {
    let leaf = prop_oneof![
        Just(Datum::Null),
        any::<bool>().prop_map(Datum::Bool),
        any_number().prop_map(Datum::Number),
        any_text().prop_map(Datum::String),
        proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(255), any::<u8>()],
            0..4
        )
        .prop_map(Datum::Binary),
        // Times are kept to the millisecond (JSON input is truncated to it).
        (
            -1_000_000_000_000_000i64..1_000_000_000_000_000,
            prop_oneof![Just("+00:00"), Just("-07:00")]
        )
            .prop_map(|(millis, timezone)| Datum::Time {
                epoch_seconds: millis as f64 / 1000.0,
                timezone: timezone.into()
            }),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Datum::Array),
            proptest::collection::btree_map(any_text(), inner, 0..4).prop_map(Datum::Object),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn key_bytes_order_as_the_reql_comparator(a in any_datum(), b in any_datum()) {
        let expected = a.cmp_reql(&b);
        let actual = key::encode(&a).cmp(&key::encode(&b));
        prop_assert_eq!(actual, expected, "{:?} vs {:?}", a, b);
    }

    #[test]
    fn keys_round_trip(value in any_datum()) {
        let decoded = key::decode(&key::encode(&value)).unwrap();
        prop_assert_eq!(decoded.cmp_reql(&value), Ordering::Equal);
    }

    #[test]
    fn documents_round_trip_and_fields_read_in_place(value in any_datum()) {
        let bytes = document::encode(&value);
        // Sized up front: stored documents keep this allocation.
        prop_assert_eq!(document::encoded_size(&value), bytes.len());
        prop_assert_eq!(bytes.capacity(), bytes.len());
        let decoded = document::decode(&bytes).unwrap();
        prop_assert_eq!(format!("{decoded:?}"), format!("{value:?}"));
        if let Datum::Object(fields) = &value {
            let view = document::DocumentRef::new(&bytes).unwrap();
            // One hint for every lookup: it is wrong for most of them.
            let near = std::cell::Cell::new(3);
            for (name, field) in fields {
                let found = view.field(name).unwrap().expect("field present").to_datum().unwrap();
                prop_assert_eq!(format!("{found:?}"), format!("{field:?}"));
                let found = view.field_near(name, &near).unwrap().expect("field present").to_datum().unwrap();
                prop_assert_eq!(format!("{found:?}"), format!("{field:?}"));
            }
            let missing = "\u{10FFFF}missing";
            prop_assert!(view.field(missing).unwrap().is_none());
            prop_assert!(view.field_near(missing, &near).unwrap().is_none());
            prop_assert!(view.field_near("", &near).unwrap().is_none() || fields.contains_key(""));
        }
    }

    #[test]
    fn truncated_or_garbled_documents_are_errors_not_panics(value in any_datum(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
        let mut bytes = document::encode(&value);
        let at = cut.index(bytes.len());
        let _ = document::decode(&bytes[..at]);
        bytes[at] ^= flip;
        let _ = document::decode(&bytes);
    }

    #[test]
    fn json_text_is_what_serializing_to_json_gives(value in any_datum()) {
        let mut written = Vec::new();
        json::write_json(&value, &mut written);
        let expected = serde_json::to_vec(&json::to_json(&value)).unwrap();
        prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(expected).unwrap());
    }

    /// Long strings, so the eight-bytes-at-a-time path meets every byte
    /// that needs escaping at every offset within a word.
    #[test]
    fn long_strings_are_escaped_as_serde_json_escapes_them(
        text in "([a-z]{0,9}[\"\\\\\u{0}-\u{1f}\u{7f}é€😀]?){0,12}"
    ) {
        let mut written = Vec::new();
        json::write_json(&Datum::String(text.clone()), &mut written);
        prop_assert_eq!(String::from_utf8(written).unwrap(), serde_json::to_string(&text).unwrap());
    }

    /// A stored document written as JSON straight from its bytes reads as
    /// its datum written as JSON.
    #[test]
    fn stored_documents_write_the_json_their_datums_write(value in any_datum()) {
        let mut expected = Vec::new();
        json::write_json(&value, &mut expected);
        let mut written = b"before ".to_vec();
        document::write_json(&document::encode(&value), &mut written).unwrap();
        prop_assert_eq!(String::from_utf8(written).unwrap(), format!("before {}", String::from_utf8(expected).unwrap()));
    }

    /// Damaged bytes: writing succeeds only with what decoding and writing
    /// the datum gives, and fails (leaving the output alone) where decoding
    /// fails or the bytes are not what encoding the decoded datum writes.
    #[test]
    fn damaged_documents_write_json_only_as_their_decoding_would(
        value in any_datum(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8.., any::<bool>()), 1..3),
    ) {
        let mut bytes = document::encode(&value);
        for (at, flip, saturate) in flips {
            let at = at.index(bytes.len());
            if saturate {
                // Two bytes of ones: an f64's exponent, so infinities and
                // NaNs, which no stored number may be.
                for byte in bytes.iter_mut().skip(at).take(2) {
                    *byte = 0xFF;
                }
            } else {
                bytes[at] ^= flip;
            }
        }
        for bytes in [&bytes[..], &bytes[..cut.index(bytes.len())]] {
            let mut written = b"kept".to_vec();
            let decoded = document::decode(bytes);
            match document::write_json(bytes, &mut written) {
                Ok(()) => {
                    let mut expected = b"kept".to_vec();
                    json::write_json(&decoded.expect("written, so decodable"), &mut expected);
                    prop_assert_eq!(written, expected);
                }
                Err(_) => {
                    prop_assert_eq!(&written, b"kept");
                    if let Ok(decoded) = decoded {
                        prop_assert_ne!(document::encode(&decoded), bytes.to_vec());
                    }
                }
            }
        }
    }

    #[test]
    fn json_round_trips(value in any_datum()) {
        let text = json::to_json(&value);
        let back = json::from_json(&text).unwrap();
        prop_assert_eq!(back.cmp_reql(&value), Ordering::Equal);
    }
}

#[test]
fn types_sort_by_type_name_as_in_rethinkdb() {
    let ascending = [
        Datum::Array(vec![]),
        Datum::Bool(false),
        Datum::Bool(true),
        Datum::Null,
        Datum::Number(-1e300),
        Datum::Number(3.5),
        Datum::Object(Object::new()),
        Datum::Binary(vec![0]),
        Datum::Time {
            epoch_seconds: 0.0,
            timezone: "+00:00".into(),
        },
        Datum::String(String::new()),
        Datum::String("a".into()),
    ];
    for pair in ascending.windows(2) {
        assert_eq!(
            pair[0].cmp_reql(&pair[1]),
            Ordering::Less,
            "{:?} < {:?}",
            pair[0],
            pair[1]
        );
        assert!(key::encode(&pair[0]) < key::encode(&pair[1]));
    }
}

#[test]
fn equal_values_share_one_key() {
    assert_eq!(
        key::encode(&Datum::Number(0.0)),
        key::encode(&Datum::Number(-0.0))
    );
    let utc = Datum::Time {
        epoch_seconds: 10.0,
        timezone: "+00:00".into(),
    };
    let pacific = Datum::Time {
        epoch_seconds: 10.0,
        timezone: "-07:00".into(),
    };
    assert_eq!(key::encode(&utc), key::encode(&pacific));
}

#[test]
fn integral_numbers_are_written_as_json_integers() {
    assert_eq!(json::to_json(&Datum::Number(1.0)).to_string(), "1");
    assert_eq!(json::to_json(&Datum::Number(-0.0)).to_string(), "-0.0");
    assert_eq!(json::to_json(&Datum::Number(1.5)).to_string(), "1.5");
}

#[test]
fn times_from_json_keep_milliseconds() {
    let parse = |epoch: f64| match json::from_json(
        &serde_json::json!({"$reql_type$": "TIME", "epoch_time": epoch, "timezone": "+00:00"}),
    )
    .unwrap()
    {
        Datum::Time { epoch_seconds, .. } => epoch_seconds,
        other => panic!("{other:?}"),
    };
    assert_eq!(parse(1375445163.0872), 1375445163.087);
    assert_eq!(parse(1.001), 1.001);
    assert_eq!(parse(-1.0), -1.0);
}

#[test]
fn base64_matches_the_standard_alphabet() {
    assert_eq!(json::base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(json::base64_encode(b"fo"), "Zm8=");
    assert_eq!(json::base64_decode("Zm8=").unwrap(), b"fo");
    assert!(json::base64_decode("Zm8=x").is_err());
    assert_eq!(
        json::base64_decode("A^CD").unwrap_err(),
        "Invalid base64 character found: '^'."
    );
    assert!(json::base64_decode("ABCDE")
        .unwrap_err()
        .starts_with("Invalid base64 length"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Predicates compare stored fields without decoding them; the answer
    /// must be the decoded comparator's.
    #[test]
    fn stored_values_order_as_the_reql_comparator(
        (a, b) in prop_oneof![
            (any_datum(), any_datum()),
            // Values of one type, where the in-place comparisons work.
            (any_text(), any_text()).prop_map(|(a, b)| (Datum::String(a), Datum::String(b))),
            (any_number(), any_number()).prop_map(|(a, b)| (Datum::Number(a), Datum::Number(b))),
            (any::<bool>(), any::<bool>()).prop_map(|(a, b)| (Datum::Bool(a), Datum::Bool(b))),
        ]
    ) {
        let (a_bytes, b_bytes) = (document::encode(&a), document::encode(&b));
        let a_view = document::DocumentRef::new(&a_bytes).unwrap();
        let b_view = document::DocumentRef::new(&b_bytes).unwrap();
        let expected = a.cmp_reql(&b);
        prop_assert_eq!(a_view.cmp_datum(&b).unwrap(), expected, "{:?} vs {:?}", a, b);
        prop_assert_eq!(a_view.cmp_document(&b_view).unwrap(), expected, "{:?} vs {:?}", a, b);
        let truthy = !matches!(a, Datum::Null | Datum::Bool(false));
        prop_assert_eq!(a_view.truthy(), truthy);
    }
}

/// Documents written before keys were grouped ahead of values (each key
/// right before its value) still read the same: readers follow offsets.
#[test]
fn objects_with_keys_beside_their_values_still_read() {
    let mut bytes = vec![0x06];
    bytes.extend_from_slice(&2u32.to_le_bytes());
    // Body: "a" 1.0, then "bb" "x".
    let mut body = vec![b'a', 0x03];
    body.extend_from_slice(&1.0f64.to_le_bytes());
    let second_key = body.len();
    body.extend_from_slice(b"bb");
    let second_value = body.len();
    body.extend_from_slice(&[0x04, 1, 0, 0, 0, b'x']);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    for (key_offset, key_len, value_offset) in [(0, 1, 1), (second_key, 2, second_value)] {
        for field in [key_offset, key_len, value_offset] {
            bytes.extend_from_slice(&(field as u32).to_le_bytes());
        }
    }
    bytes.extend_from_slice(&body);
    let mut expected = Object::new();
    expected.insert("a".into(), Datum::Number(1.0));
    expected.insert("bb".into(), Datum::String("x".into()));
    assert_eq!(document::decode(&bytes).unwrap(), Datum::Object(expected));
    let view = document::DocumentRef::new(&bytes).unwrap();
    assert_eq!(
        view.field("bb").unwrap().unwrap().to_datum().unwrap(),
        Datum::String("x".into())
    );
    assert!(view.field("b").unwrap().is_none());
}
