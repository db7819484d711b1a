//! How records are encoded: one serde format, one format byte, versioned
//! enums.
//!
//! Every stored value is `[FORMAT] ++ postcard(record)`. postcard's wire
//! format is frozen at 1.0 and compact; the leading format byte leaves room for
//! a future format without guessing. Every record type is an enum of versions
//! (`UserRecord::V1(..)`), so adding a `V2` keeps old bytes readable: the
//! variant index is the first byte of the payload. Golden-bytes tests
//! (`assert_golden`, feature `test-utils`) pin each version's exact bytes so
//! an accidental format change fails CI instead of corrupting deployed data.
//!
//! Decoding never panics: malformed bytes become [`StorageError::Corrupt`]
//! naming the key.

use super::StorageError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format byte of postcard 1.x encoded records.
pub const FORMAT_POSTCARD: u8 = 1;

/// Encode `record` for storage at `key`.
pub fn encode<T: Serialize>(key: &[u8], record: &T) -> Result<Vec<u8>, StorageError> {
    let out = vec![FORMAT_POSTCARD];
    postcard::to_extend(record, out).map_err(|e| StorageError::Corrupt {
        key: key.to_vec(),
        reason: format!("record cannot be encoded: {e}"),
    })
}

/// Decode the bytes stored at `key`.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: key.to_vec(),
        reason,
    };
    match bytes.split_first() {
        Some((&FORMAT_POSTCARD, payload)) => {
            let (record, rest) = postcard::take_from_bytes(payload)
                .map_err(|e| corrupt(format!("undecodable record: {e}")))?;
            if rest.is_empty() {
                Ok(record)
            } else {
                Err(corrupt(format!(
                    "{} trailing bytes after the record",
                    rest.len()
                )))
            }
        }
        Some((format, _)) => Err(corrupt(format!("unknown record format byte {format}"))),
        None => Err(corrupt("empty value".to_owned())),
    }
}

/// Assert that `record` encodes to exactly `expected_hex` and decodes back to
/// itself. A failure prints the actual bytes. Never "fix" a golden test by
/// pasting new bytes for an existing version: add a new enum version instead.
#[cfg(feature = "test-utils")]
pub fn assert_golden<T>(record: &T, expected_hex: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode(b"golden", record).expect("golden record encodes");
    let actual = super::key::hex(&bytes);
    assert_eq!(
        actual, expected_hex,
        "encoding of {record:?} changed: stored records of this version would no longer decode"
    );
    let decoded: T = decode(b"golden", &bytes).expect("golden bytes decode");
    assert_eq!(
        &decoded, record,
        "golden bytes decode to a different record"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum SampleRecord {
        V1 { name: String, count: u32 },
    }

    #[test]
    fn golden_bytes_pin_the_format() {
        assert_golden(
            &SampleRecord::V1 {
                name: "ab".into(),
                count: 300,
            },
            "0100026162ac02",
        );
    }

    #[test]
    fn malformed_bytes_are_corrupt_with_key() {
        for bad in [&[][..], &[9, 0], &[1, 7], &[1, 0, 2, b'a', b'b', 1, 99]] {
            match decode::<SampleRecord>(b"k", bad) {
                Err(StorageError::Corrupt { key, .. }) => assert_eq!(key, b"k"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
