use super::*;
use crate::source::console::DifyAuth;

const VALID: [(&str, &str); 4] = [
    ("DIFY_API_URL", "https://dify.example.com/"),
    ("DIFY_API_TOKEN", "console-token"),
    ("EXTERNAL_API_URL", "https://meter.example.com/usage"),
    ("EXTERNAL_API_TOKEN", "meter-token"),
];

fn config(extra: &[(&'static str, &'static str)]) -> Result<Config, Problems> {
    let mut pairs: Vec<(&str, &str)> = VALID.to_vec();
    pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    pairs.extend(extra.iter().copied().filter(|(_, v)| !v.is_empty()));
    Config::from_env(&Environment::from_pairs(pairs))
}

#[test]
fn defaults_apply() {
    let config = config(&[]).unwrap();
    let SourceConfig::Console { url, auth } = &config.source else {
        panic!("the console API is the default source");
    };
    assert_eq!(url.as_str(), "https://dify.example.com/");
    assert!(matches!(auth, DifyAuth::ConsoleToken(_)));
    assert_eq!(config.max_retry, 3);
    assert_eq!(config.graceful_shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.schedule.expression(), "0 0 * * *");
}

#[test]
fn loopback_http_is_allowed_and_other_http_is_not() {
    assert!(config(&[("DIFY_API_URL", "http://127.0.0.1:5001")]).is_ok());
    assert!(config(&[("DIFY_API_URL", "http://[::1]:5001")]).is_ok());
    assert!(config(&[("DIFY_API_URL", "http://localhost")]).is_ok());
    let err = config(&[("DIFY_API_URL", "http://dify.internal")]).unwrap_err();
    assert!(err.0[0].message.contains("ALLOW_INSECURE_HTTP"), "{err}");
    assert!(
        config(&[
            ("DIFY_API_URL", "http://dify.internal"),
            ("ALLOW_INSECURE_HTTP", "true")
        ])
        .is_ok()
    );
}

#[test]
fn a_password_inside_a_url_is_masked_in_problems_and_output() {
    let err = config(&[(
        "EXTERNAL_API_URL",
        "ftp://user:hunter2-long@meter.example.com",
    )])
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let ok = config(&[(
        "PUSHGATEWAY_URL",
        "https://user:hunter2-long@gw.example.com/x",
    )])
    .unwrap();
    assert!(!format!("{:?}", ok.masked()).contains("hunter2"));
}

#[test]
fn credentials_in_a_url_whose_requests_carry_a_token_are_refused() {
    for (variable, value) in [
        (
            "EXTERNAL_API_URL",
            "https://user:hunter2-long@meter.example.com/x",
        ),
        ("DIFY_API_URL", "https://user:hunter2-long@dify.example.com"),
    ] {
        let err = config(&[(variable, value)]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].variable, variable);
        assert!(
            err.0[0]
                .message
                .contains("carries `user:password@` while requests authenticate with")
                && err.0[0].message.contains("`https://user:***@"),
            "{err}"
        );
    }
}

#[test]
fn a_url_password_with_unencoded_delimiters_is_refused_masked() {
    for variable in ["DIFY_DATABASE_URL", "SINK_POSTGRES_URL", "PUSHGATEWAY_URL"] {
        let value = if variable == "PUSHGATEWAY_URL" {
            "https://ops:hunter2/x?y#z@gw.example.com"
        } else {
            "postgres://ro:hunter2/x?y#z@db:5432/dify"
        };
        let mut pairs = vec![(variable, value)];
        if variable == "DIFY_DATABASE_URL" {
            pairs.extend([("DIFY_API_URL", ""), ("DIFY_API_TOKEN", "")]);
        }
        let err = config(&pairs).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("{variable}: `"))
                && text.contains(":***@")
                && text.contains("has a password holding `/`, `?` or `#` unencoded"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn header_bound_values_must_be_header_safe_and_are_never_echoed() {
    for (variable, value) in [
        ("DIFY_API_TOKEN", "tok\nen-secret"),
        ("EXTERNAL_API_TOKEN", "tok\u{7}en-secret"),
        ("DIFY_API_TOKEN", "tokö-secret"),
    ] {
        let err = config(&[(variable, value)]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].variable, variable);
        assert!(err.0[0].message.contains("character 4 of"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    assert!(config(&[("EXTERNAL_API_TOKEN", "a b\tc-long")]).is_ok());
}

#[test]
fn workspace_id_makes_the_token_an_admin_key() {
    let config = config(&[("DIFY_WORKSPACE_ID", "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47")]).unwrap();
    assert!(matches!(
        config.source,
        SourceConfig::Console {
            auth: DifyAuth::AdminKey { .. },
            ..
        }
    ));
}

#[test]
fn the_database_url_selects_the_database_source_alone() {
    let database = config(&[
        ("DIFY_API_URL", ""),
        ("DIFY_API_TOKEN", ""),
        (
            "DIFY_DATABASE_URL",
            "postgres://ro:hunter2-long@db:5432/dify",
        ),
        ("DIFY_WORKSPACE_ID", "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47"),
    ])
    .unwrap();
    assert_eq!(database.source.name(), "database");
    let masked = format!("{:?} {:?}", database.masked(), database);
    assert!(!masked.contains("hunter2"), "{masked}");
    assert!(
        masked.contains("postgres://ro:***@db:5432/dify"),
        "{masked}"
    );

    let err = config(&[("DIFY_DATABASE_URL", "postgres://ro:hunter2-long@db/dify")]).unwrap_err();
    let variables: Vec<_> = err.0.iter().map(|p| p.variable).collect();
    assert_eq!(variables, ["DIFY_API_URL", "DIFY_API_TOKEN"]);
    let err = config(&[
        ("DIFY_API_URL", ""),
        ("DIFY_API_TOKEN", ""),
        ("DIFY_DATABASE_URL", "mssql://ro:hunter2-long@db/dify"),
    ])
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert_eq!(err.0[0].variable, "DIFY_DATABASE_URL");
    assert!(err.to_string().contains("mysql://"), "{err}");
}

#[test]
fn a_mysql_database_url_is_a_database_source_but_no_postgres_sink() {
    let database = config(&[
        ("DIFY_API_URL", ""),
        ("DIFY_API_TOKEN", ""),
        ("DIFY_DATABASE_URL", "mysql://ro:hunter2-long@db:3306/dify"),
    ])
    .unwrap();
    assert_eq!(database.source.name(), "database");
    let err = config(&[(
        "SINK_POSTGRES_URL",
        "mysql://writer:hunter2-long@db/billing",
    )])
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("the postgres sink writes to PostgreSQL only"),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn the_raw_environment_has_one_field_per_variable_of_the_table() {
    let fields = serde_fields::<RawEnv>();
    let names: Vec<String> = VARIABLES
        .iter()
        .map(|v| v.name.to_ascii_lowercase())
        .collect();
    assert_eq!(fields, names);
}

#[test]
fn every_default_passes_its_own_rule() {
    let defaults: Vec<(&str, &str)> = VARIABLES
        .iter()
        .filter_map(|v| Some((v.name, v.default?)))
        .collect();
    let mut pairs = VALID.to_vec();
    // The sinks whose variables have defaults, so that those defaults apply.
    pairs.extend([
        (
            "SINK_POSTGRES_URL",
            "postgres://writer@127.0.0.1:5432/billing",
        ),
        ("SINK_FILE_DIR", "/tmp/dify-usage-files"),
    ]);
    pairs.extend(defaults);
    Config::from_env(&Environment::from_pairs(pairs)).unwrap();
}

#[test]
fn env_example_and_readme_list_exactly_the_variables_of_the_table() {
    let table: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
    // `.env.example`: every `NAME=` line, commented out or not, in order of first mention.
    let mut example: Vec<&str> = Vec::new();
    for line in include_str!("../../.env.example").lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some((name, _)) = line.split_once('=')
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            && !example.contains(&name)
        {
            example.push(name);
        }
    }
    let mut sorted_example = example.clone();
    sorted_example.sort_unstable();
    let mut sorted_table = table.clone();
    sorted_table.sort_unstable();
    assert_eq!(sorted_example, sorted_table, ".env.example");

    // The README: the first cell of every row of the table under `## Configuration`.
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("the README has a `## Configuration` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split_once('`'))
        .map(|(name, _)| name)
        .filter(|name| name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .collect();
    assert_eq!(documented, table, "README.md, ## Configuration");
}

#[test]
fn a_secret_shorter_than_8_characters_is_refused_without_being_shown() {
    for (variable, value) in [
        ("EXTERNAL_API_TOKEN", "t"),
        ("DIFY_API_TOKEN", "short-7"),
        ("EXTERNAL_API_URL", "https://u:pw@meter.example.com/x"),
        ("PUSHGATEWAY_URL", "https://u:p%40ss@gw.example.com"),
    ] {
        let err = config(&[(variable, value)]).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].variable, variable);
        assert!(
            err.0[0].message.contains("at least 8 are required"),
            "{err}"
        );
    }
    let err = config(&[
        ("DIFY_API_URL", ""),
        ("DIFY_API_TOKEN", ""),
        ("DIFY_DATABASE_URL", "postgres://ro:pw@db/dify"),
    ])
    .unwrap_err();
    assert_eq!(err.0[0].variable, "DIFY_DATABASE_URL", "{err}");
    assert!(!err.to_string().contains(":pw@"), "{err}");
    let err = config(&[
        ("DIFY_API_TOKEN", ""),
        ("DIFY_EMAIL", "ops@example.com"),
        ("DIFY_PASSWORD", "1234567"),
    ])
    .unwrap_err();
    assert_eq!(err.0[0].variable, "DIFY_PASSWORD", "{err}");
    assert!(!err.to_string().contains("1234567"), "{err}");
    assert!(config(&[("EXTERNAL_API_TOKEN", "12345678")]).is_ok());
}

#[test]
fn the_masker_knows_every_secret_the_table_marks() {
    let env = Environment::from_pairs([
        ("DIFY_DATABASE_URL", "postgres://ro:db-canary-pw@db/dify"),
        ("DIFY_API_URL", "https://u:api-url-canary@dify"),
        ("EXTERNAL_API_URL", "https://u:meter-url-canary@meter/x"),
        ("PUSHGATEWAY_URL", "https://u:push-url-canary@gw"),
        ("DIFY_API_TOKEN", "dify-token-canary"),
        ("DIFY_PASSWORD", "password-canary"),
        ("EXTERNAL_API_TOKEN", "meter-token-canary"),
        ("DIFY_EMAIL", "ops@example.com"),
    ]);
    let masker = masker(&env);
    let text = "db-canary-pw api-url-canary meter-url-canary push-url-canary dify-token-canary \
                password-canary meter-token-canary ops@example.com";
    assert_eq!(
        masker.mask(text),
        "*** *** *** *** *** *** *** ops@example.com"
    );
}

/// The field names a `Deserialize` type asks for, in order.
fn serde_fields<'de, T: Deserialize<'de>>() -> Vec<String> {
    struct Fields(Vec<String>);
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("only structs"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields.iter().map(|f| (*f).to_owned()).collect();
            Err(serde::de::Error::custom("fields captured"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields = Fields(Vec::new());
    let _ = T::deserialize(&mut fields);
    fields.0
}
