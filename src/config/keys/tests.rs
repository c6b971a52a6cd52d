//! The key table against the file format, the README and a reload's classification.
use super::super::raw;
use super::*;
use serde::de::{self, Deserializer, Visitor};
use std::collections::BTreeSet;

/// A deserializer that only records the field names serde asks for: the file format's keys,
/// straight from the raw model's derive, so a field added there without a row here fails.
struct FieldNames(&'static [&'static str]);

impl<'de> Deserializer<'de> for &mut FieldNames {
    type Error = de::value::Error;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn fields<T: for<'de> serde::Deserialize<'de>>() -> &'static [&'static str] {
    let mut names = FieldNames(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}

#[test]
fn the_table_names_every_key_of_the_file_format() {
    let top = fields::<raw::RawConfig>();
    assert_eq!(
        top,
        [
            "proxy",
            "monitor",
            "admin",
            "fleet",
            "health",
            "session",
            "dns",
            "auth",
            "categories"
        ],
        "a new section needs its keys in the table"
    );
    let mut format: BTreeSet<String> = BTreeSet::new();
    let mut section = |name: &str, keys: &[&str]| {
        for k in keys {
            format.insert(format!("{name}.{k}"));
        }
    };
    let but = |keys: &[&'static str], nested: &str| -> Vec<&'static str> {
        keys.iter().copied().filter(|k| *k != nested).collect()
    };
    section(
        "proxy",
        &but(fields::<raw::RawProxy>(), "rate_limit")
            .into_iter()
            .filter(|k| *k != "tls")
            .collect::<Vec<_>>(),
    );
    section("proxy.rate_limit", fields::<raw::RawRateLimit>());
    section("proxy.tls", fields::<raw::RawTls>());
    section("auth", fields::<raw::RawAuth>());
    section("categories.*.auth", fields::<raw::RawCategoryAuth>());
    section(
        "monitor",
        &fields::<raw::RawMonitor>()
            .iter()
            .copied()
            .filter(|k| *k != "alerts")
            .collect::<Vec<_>>(),
    );
    section("monitor.alerts", fields::<raw::RawAlerts>());
    section("admin", fields::<raw::RawAdmin>());
    section("fleet", fields::<raw::RawFleet>());
    section("health", fields::<raw::RawHealth>());
    section("session", fields::<raw::RawSession>());
    section("dns", fields::<raw::RawDns>());
    section("categories.*", &but(fields::<raw::RawCategory>(), "auth"));
    let table: BTreeSet<String> = names().into_iter().collect();
    assert_eq!(format, table);
    assert_eq!(
        table.len(),
        KEYS.len() + CATEGORY_KEYS.len(),
        "no key twice"
    );
}

#[test]
fn restart_keys_keep_the_running_value_and_the_rest_is_applied() {
    let parse = |extra: &str| {
        crate::config::parse(
            &format!("{extra}\n[categories.a]\nports = \"41000-41001\"\n"),
            std::path::Path::new("t.toml"),
            std::path::Path::new("/x"),
        )
        .expect("valid")
    };
    let old = parse("[proxy]\nlisten = \"127.0.0.1:8080\"\nmax_body = \"1MiB\"");
    let mut new = parse("[proxy]\nlisten = \"127.0.0.1:8081\"\nmax_body = \"2MiB\"");
    let (applied, restart) = classify(&old, &mut new);
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].key, "proxy.max_body");
    assert_eq!(applied[0].new, "2097152");
    assert_eq!(restart.len(), 1);
    assert_eq!(restart[0].key, "proxy.listen");
    assert_eq!(new.proxy.listen, old.proxy.listen, "pinned");
    assert_eq!(new.proxy.max_body, 2 << 20);
    assert!(diff(&old, &new).iter().all(|c| c.key == "proxy.max_body"));
}

#[test]
fn the_readme_reload_table_is_this_table() {
    let readme = include_str!("../../../README.md");
    let begin = "<!-- reload-keys:begin (generated from src/config/keys/mod.rs) -->\n";
    let end = "<!-- reload-keys:end -->";
    let start = readme
        .find(begin)
        .expect("README has the reload table markers")
        + begin.len();
    let stop = readme[start..].find(end).expect("end marker") + start;
    assert_eq!(
        &readme[start..stop],
        markdown(),
        "README's reload table differs from src/config/keys/mod.rs: paste `mcp-fleet keys` between the markers"
    );
}
