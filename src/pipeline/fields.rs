//! A contact's CSV fields as the ledger stores them (`recipients.fields`), so that the ledger
//! alone can render the message later.
//!
//! A JSON object from column name to value. A value equal to the row's own address or name,
//! which the ledger already holds in columns of their own, is stored as `0` (the address) or `1`
//! (the name) instead of a second copy: at a million recipients the address alone is about
//! 25 MB. CSV values are always strings, so the numbers cannot be mistaken for one, and rows
//! written before this encoding (strings only) read the same.
//!
//! Owns only the encoding; it must not decide which fields exist or what they mean.

use std::collections::BTreeMap;

/// Marks a value that is the row's address.
const ADDRESS: u8 = 0;
/// Marks a value that is the row's name.
const NAME: u8 = 1;

/// The stored form of `fields` for a row whose address is `email` and name `name`.
pub fn encode(fields: &BTreeMap<String, String>, email: &str, name: Option<&str>) -> String {
    let mut out = String::with_capacity(16 * fields.len() + 2);
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, key);
        out.push(':');
        if value == email {
            out.push(char::from(b'0' + ADDRESS));
        } else if name == Some(value.as_str()) {
            out.push(char::from(b'0' + NAME));
        } else {
            push_json_string(&mut out, value);
        }
    }
    out.push('}');
    out
}

/// The fields of a row from their stored form, with the row's `email` and `name`.
///
/// # Errors
/// When `stored` is not an object of strings and markers (a damaged ledger).
pub fn decode(
    stored: &str,
    email: &str,
    name: Option<&str>,
) -> Result<BTreeMap<String, String>, String> {
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(stored)
        .map_err(|e| format!("the ledger's stored fields are not valid JSON: {e}"))?;
    raw.into_iter()
        .map(|(key, value)| {
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) if n.as_u64() == Some(u64::from(ADDRESS)) => {
                    email.to_owned()
                }
                serde_json::Value::Number(n) if n.as_u64() == Some(u64::from(NAME)) => {
                    name.map(str::to_owned).ok_or_else(|| {
                        format!("the ledger's stored field `{key}` names a missing name")
                    })?
                }
                other => {
                    return Err(format!(
                        "the ledger's stored field `{key}` is not text: {other}"
                    ));
                }
            };
            Ok((key, value))
        })
        .collect()
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json's escaping (quotes, backslashes, control characters); cannot fail for a str.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\"")));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_address_and_name_are_stored_once_and_read_back() {
        let fields = map(&[
            ("email", "ann@example.com"),
            ("name", "Ann"),
            ("city", "Oslo \"Norway\"\n"),
            ("login", "ann@example.com"),
        ]);
        let stored = encode(&fields, "ann@example.com", Some("Ann"));
        assert_eq!(
            stored,
            r#"{"city":"Oslo \"Norway\"\n","email":0,"login":0,"name":1}"#
        );
        assert_eq!(
            decode(&stored, "ann@example.com", Some("Ann")).unwrap(),
            fields
        );
    }

    #[test]
    fn a_raw_address_that_differs_from_the_normalised_one_is_kept() {
        // The ledger's address is normalised (lower-case domain); the CSV's spelling stays.
        let fields = map(&[("email", "Ann@Example.COM"), ("name", "")]);
        let stored = encode(&fields, "Ann@example.com", None);
        assert_eq!(stored, r#"{"email":"Ann@Example.COM","name":""}"#);
        assert_eq!(decode(&stored, "Ann@example.com", None).unwrap(), fields);
    }

    #[test]
    fn rows_stored_before_the_markers_read_the_same() {
        let old = r#"{"email":"bo@example.com","name":"Bo","n":"7"}"#;
        let fields = decode(old, "bo@example.com", Some("Bo")).unwrap();
        assert_eq!(
            fields,
            map(&[("email", "bo@example.com"), ("name", "Bo"), ("n", "7")])
        );
    }

    #[test]
    fn damaged_values_are_errors_not_guesses() {
        assert!(decode(r#"{"a":2}"#, "x@y.z", None).is_err());
        assert!(decode(r#"{"a":1}"#, "x@y.z", None).is_err());
        assert!(decode(r#"{"a":true}"#, "x@y.z", None).is_err());
        assert!(decode("[", "x@y.z", None).is_err());
    }
}
