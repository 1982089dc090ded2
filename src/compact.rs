//! Compacting JSON text without re-serializing it.
//!
//! Parsing a payload into a `serde_json::Value` and writing it back changes
//! it: integers beyond 64 bits become floats, number spellings change
//! (`1E3` → `1000.0`), escapes are rewritten. Stored payloads are the
//! caller's text instead, with only the whitespace between tokens removed,
//! which JSON defines as insignificant.

/// Removes the whitespace outside strings from JSON text, leaving every
/// other byte as it is (escapes, number spelling, key order). `None` when
/// there is nothing to remove, so already compact text, the common case,
/// costs no copy.
///
/// The text must already be known to be JSON: this only tracks whether it
/// is inside a string, and on other input it returns some text without
/// panicking.
pub(crate) fn compact_json(text: &str) -> Option<String> {
    let mut compacted: Option<String> = None;
    // Start of the bytes not yet copied to `compacted`.
    let mut pending = 0;
    let mut in_string = false;
    let mut escaped = false;
    for (at, byte) in text.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            let out = compacted.get_or_insert_with(|| String::with_capacity(text.len()));
            // `at` and `at + 1` are char boundaries: the byte is ASCII.
            out.push_str(&text[pending..at]);
            pending = at + 1;
        }
    }
    compacted.map(|mut out| {
        out.push_str(&text[pending..]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(text: &str) -> String {
        compact_json(text).unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn already_compact_text_is_not_copied() {
        for text in [
            "",
            "1",
            "{}",
            r#"{"a":[1,2,{"b":null}],"c":"d e"}"#,
            r#""  spaces \" inside  ""#,
        ] {
            assert_eq!(compact_json(text), None, "{text:?}");
        }
    }

    #[test]
    fn whitespace_between_tokens_goes() {
        assert_eq!(
            compact(" {\n\t\"a\" : [ 1 ,\r\n 2.50 ] ,\"b\":{ } } \n"),
            r#"{"a":[1,2.50],"b":{}}"#
        );
        assert_eq!(compact("\n\n  -0.0  "), "-0.0");
        assert_eq!(
            compact("[ [ [ ] , { \"x\" : [ true , false , null ] } ] ]"),
            r#"[[[],{"x":[true,false,null]}]]"#
        );
    }

    #[test]
    fn strings_are_kept_byte_for_byte() {
        let cases = [
            (r#"[ "a b\tc" ]"#, r#"["a b\tc"]"#),
            // An escaped quote does not end the string, an escaped
            // backslash before a quote does.
            (r#"{ "k\" v" : "x" }"#, r#"{"k\" v":"x"}"#),
            (r#"[ "a\\" , "b" ]"#, r#"["a\\","b"]"#),
            (r#"[ "\\\" x" ]"#, r#"["\\\" x"]"#),
            (
                r#"{ "\u00e9\ud83d\ude00\/" : "é 😀" }"#,
                r#"{"\u00e9\ud83d\ude00\/":"é 😀"}"#,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(compact(text), expected, "{text:?}");
        }
    }

    #[test]
    fn numbers_keep_their_spelling() {
        let text = "[ 1.5e-300 , 5e-324 , 1.7976931348623157e308 , -0.0 , \
                    123456789012345678901234567890 , -99999999999999999999 , \
                    0.10000000000000000000000000001 , 1E+2 ]";
        assert_eq!(
            compact(text),
            "[1.5e-300,5e-324,1.7976931348623157e308,-0.0,\
             123456789012345678901234567890,-99999999999999999999,\
             0.10000000000000000000000000001,1E+2]"
        );
    }

    // The result is the same JSON value, and compacting is idempotent.
    #[test]
    fn compacting_keeps_the_value() {
        let text = "{ \"a\" : [ 1 , \"x y\" , { \"b\" : null } ] ,\n \"c\" : -2.5e10 }";
        let compacted = compact(text);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(text).unwrap(),
            serde_json::from_str::<serde_json::Value>(&compacted).unwrap()
        );
        assert_eq!(compact_json(&compacted), None);
    }

    fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[ \"\\\\\t\n]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((any::<String>(), inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        // Pretty-printed JSON compacts to exactly what serde_json writes
        // compact: the two differ only in whitespace between tokens.
        #[test]
        fn pretty_json_compacts_to_compact_json(value in arbitrary_json()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let compact_text = serde_json::to_string(&value).unwrap();
            proptest::prop_assert_eq!(compact(&pretty), compact_text.clone());
            proptest::prop_assert_eq!(compact_json(&compact_text), None);
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        for text in ["\"unterminated  ", "\\", " \" \\", "{ ] ", "é é"] {
            let _ = compact_json(text);
        }
    }
}
