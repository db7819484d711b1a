use super::*;

#[test]
fn schema_names_are_quoted_and_checked() {
    let sql = Sql::new(Some(r#"we"ird"#)).unwrap();
    assert_eq!(sql.prefix, r#""we""ird"."#);
    assert_eq!(
        sql.get,
        r#"SELECT value, version FROM "we""ird".kv WHERE key = $1"#
    );
    assert_eq!(Sql::new(None).unwrap().prefix, "");
    for bad in ["", "nul\0byte", &"x".repeat(64)] {
        assert!(matches!(Sql::new(Some(bad)), Err(StorageError::Backend(_))));
    }
}

#[test]
fn error_chains_include_every_cause() {
    let inner = Failure {
        context: "inner cause".into(),
        source: None,
    };
    let outer = Failure {
        context: "outer".into(),
        source: Some(Box::new(inner)),
    };
    assert_eq!(chain(&outer), "outer: inner cause");
}

#[test]
fn missing_server_binaries_fail_with_the_fix() {
    let empty = tempfile::tempdir().unwrap();
    let err = testing::find_bin_dir_in(
        Some(empty.path().as_os_str().to_owned()),
        &empty.path().join("no-postgresql"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("apt-get install postgresql"), "{err}");
    assert!(err.contains(testing::URL_ENV), "{err}");
}

#[test]
fn server_binaries_are_found_under_the_newest_version() {
    let root = tempfile::tempdir().unwrap();
    for version in ["9", "15", "13"] {
        let bin = root.path().join(version).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["initdb", "pg_ctl"] {
            std::fs::write(bin.join(tool), "").unwrap();
        }
    }
    std::fs::create_dir_all(root.path().join("17").join("bin")).unwrap();
    let found = testing::find_bin_dir_in(None, root.path()).unwrap();
    assert_eq!(found, root.path().join("15").join("bin"));
}

#[test]
fn placeholders_expand_once() {
    let sql = Sql::new(Some("it's {seq}")).unwrap();
    assert_eq!(
        sql.expand("SELECT nextval({seq}) FROM {s}kv -- {other}"),
        r#"SELECT nextval('"it''s {seq}".kv_version') FROM "it's {seq}".kv -- {other}"#
    );
    assert_eq!(
        sql.expand("decode('{salt}', 'hex')"),
        "decode('69742773207b7365717d', 'hex')"
    );
    let plain = Sql::new(None).unwrap();
    assert_eq!(plain.expand("{seq}"), "'kv_version'");
}
