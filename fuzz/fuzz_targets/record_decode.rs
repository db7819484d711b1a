//! Stored bytes are untrusted after a crash or a bad migration: decoding any
//! bytes must give a record or `StorageError::Corrupt`, never a panic.
#![no_main]

use keystead::StorageError;
use keystead::store::record::decode;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum Sample {
    V1 { name: String, count: u32, tags: Vec<Vec<u8>>, parent: Option<u64> },
}

fuzz_target!(|data: &[u8]| {
    match decode::<Sample>(b"fuzz", data) {
        Ok(_) | Err(StorageError::Corrupt { .. }) => {}
        Err(other) => panic!("decode returned {other:?}"),
    }
});
