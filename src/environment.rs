//! Where configuration values come from: the process environment and an optional env file.
//!
//! The file is read into a map instead of being written into the process environment, so nothing
//! here mutates global state and tests can hand in any set of variables. Values already in the
//! process environment win over the file (the dotenv convention, documented in `--help`).
//!
//! Every variable of the table is read here once for every command: under its own name however
//! its key was spelled (a lower-case key in an env file is the same variable, so its secret is
//! masked like any other), trimmed by one rule, and refused when its value is not UTF-8 (dropping
//! it would silently fall back to a default, such as a second `STATE_DIR`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::config::variables;

/// The file read when `--env-file` is not given and it exists in the working directory.
const DEFAULT_ENV_FILE: &str = ".env";
/// The template shipped with the tool; keys missing from the environment are worth a warning.
const EXAMPLE_ENV_FILE: &str = ".env.example";

/// Keys of `.env.example` that stand for a choice: each is not missing while one of its
/// alternatives is wholly set (every variable of that alternative). `.env.example` itself tells a
/// reader to log in instead of using a token, or to read the database instead of the console API,
/// so following it must not draw a warning.
const ALTERNATIVES: &[(&str, &[&[&str]])] = &[
    (
        "DIFY_API_TOKEN",
        &[&["DIFY_EMAIL", "DIFY_PASSWORD"], &["DIFY_DATABASE_URL"]],
    ),
    ("DIFY_API_URL", &[&["DIFY_DATABASE_URL"]]),
    ("EXTERNAL_API_URL", OTHER_SINKS),
    ("EXTERNAL_API_TOKEN", OTHER_SINKS),
];

/// The sinks other than the http sink: any one of them replaces it.
const OTHER_SINKS: &[&[&str]] = &[
    &["SINK_POSTGRES_URL"],
    &["SINK_FILE_DIR"],
    &["SINK_CLOUDEVENTS_URL"],
];

/// Whether `key` is set, or stands for a choice another of whose alternatives is set.
fn is_provided(key: &str, vars: &BTreeMap<String, String>) -> bool {
    let set = |name: &str| vars.get(name).is_some_and(|v| !v.trim().is_empty());
    set(key)
        || ALTERNATIVES
            .iter()
            .filter(|(choice, _)| *choice == key)
            .flat_map(|(_, alternatives)| alternatives.iter())
            .any(|alternative| alternative.iter().all(|name| set(name)))
}

/// The merged variables, and what an operator should hear about how they were found.
#[derive(Debug, Default)]
pub(crate) struct Environment {
    vars: BTreeMap<String, String>,
    /// Keys of `.env.example` that neither the file nor the process environment set.
    pub(crate) missing_example_keys: Vec<String>,
}

impl Environment {
    /// Reads the process environment and the env file.
    ///
    /// `explicit_file` is `--env-file`: when given it must exist. Otherwise `.env` in the working
    /// directory is read if present.
    pub(crate) fn load(explicit_file: Option<&Path>) -> Result<Environment> {
        let mut process = BTreeMap::new();
        for (key, value) in std::env::vars_os() {
            let Ok(key) = key.into_string() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    process.insert(key, value);
                }
                Err(_) if variables::canonical_name(&key).is_some() => bail!(
                    "{key}: its value is not valid UTF-8 (the value is not shown); set it as UTF-8 text"
                ),
                // Not ours: no concern of the exporter.
                Err(_) => {}
            }
        }
        Self::load_with(process, explicit_file, Path::new("."))
    }

    fn load_with(
        process: BTreeMap<String, String>,
        explicit_file: Option<&Path>,
        working_dir: &Path,
    ) -> Result<Environment> {
        let env_file = match explicit_file {
            Some(path) => {
                check_env_file(path)?;
                Some(path.to_path_buf())
            }
            None => Some(working_dir.join(DEFAULT_ENV_FILE)).filter(|p| p.is_file()),
        };

        let mut vars = match &env_file {
            Some(path) => canonical(
                read_env_file(path)?,
                &format!("the env file {}", path.display()),
            )?,
            None => BTreeMap::new(),
        };
        vars.extend(canonical(process, "the process environment")?);

        let default_file = working_dir.join(DEFAULT_ENV_FILE);
        let example_file = working_dir.join(EXAMPLE_ENV_FILE);
        let missing_example_keys = if default_file.is_file() && example_file.is_file() {
            read_env_file(&example_file)?
                .into_keys()
                .filter(|key| !vars.contains_key(key) && !is_provided(key, &vars))
                .collect()
        } else {
            Vec::new()
        };

        Ok(Environment {
            vars,
            missing_example_keys,
        })
    }

    /// Builds an environment from explicit pairs (tests, and commands that need one variable).
    #[cfg(test)]
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Environment::default()
        }
    }

    /// The value of one variable; empty and blank values count as unset.
    #[must_use]
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// All variables, for deserializing with envy.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.vars
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
    }
}

/// The variables of the table under their own names and trimmed (but [`variables::kept_as_typed`]);
/// a name given twice in different letter case is an error, since which one counts would be a guess.
fn canonical(vars: BTreeMap<String, String>, origin: &str) -> Result<BTreeMap<String, String>> {
    let mut canonical = BTreeMap::new();
    let mut spelled: BTreeMap<&'static str, String> = BTreeMap::new();
    for (key, value) in vars {
        let Some(name) = variables::canonical_name(&key) else {
            canonical.insert(key, value);
            continue;
        };
        if let Some(first) = spelled.insert(name, key.clone()) {
            bail!("{name} is set twice in {origin}, as `{first}` and `{key}`; keep one");
        }
        let value = if variables::kept_as_typed(name) {
            value
        } else {
            value.trim().to_owned()
        };
        canonical.insert(name.to_owned(), value);
    }
    Ok(canonical)
}

/// `--env-file` names a readable file: the message says which of the usual mistakes it is.
fn check_env_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!("--env-file {}: no such file", path.display())
        }
        Err(err) => bail!("--env-file {}: {}", path.display(), io_cause(&err)),
        Ok(meta) if meta.is_dir() => bail!(
            "--env-file {}: is a directory; name the env file inside it",
            path.display()
        ),
        Ok(_) => Ok(()),
    }
}

/// An I/O error in words, without the "(os error N)" noise.
pub(crate) fn io_cause(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        _ => err.to_string(),
    }
}

/// The UTF-8 byte order mark some Windows editors put at the start of a file.
const BOM: char = '\u{feff}';

fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let context = || format!("cannot read env file {}", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|err| anyhow::anyhow!("{}: {}", context(), io_cause(&err)))?;
    let text = text.strip_prefix(BOM).unwrap_or(&text);
    let mut vars = BTreeMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((key, value)) => {
                vars.insert(key, value);
            }
            // dotenvy's message quotes the offending text, which may be a secret: name the line only.
            Err(dotenvy::Error::LineParse(fragment, _)) => {
                let line = text
                    .lines()
                    .position(|l| l.contains(fragment.trim()))
                    .map_or_else(|| "a line".to_owned(), |i| format!("line {}", i + 1));
                bail!(
                    "{}: {line} is not NAME=value; quote values that contain spaces, e.g. CRON_SCHEDULE=\"15 0 * * *\"",
                    context()
                );
            }
            Err(err) => return Err(err).with_context(context),
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn process_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".env", "LOG_LEVEL=debug\nMAX_RETRY=5\n");
        let process = BTreeMap::from([("LOG_LEVEL".to_owned(), "warn".to_owned())]);
        let env = Environment::load_with(process, None, dir.path()).unwrap();
        assert_eq!(env.get("LOG_LEVEL"), Some("warn"));
        assert_eq!(env.get("MAX_RETRY"), Some("5"));
    }

    #[test]
    fn a_named_file_that_is_missing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.env");
        let err = Environment::load_with(BTreeMap::new(), Some(&missing), dir.path()).unwrap_err();
        assert!(err.to_string().contains("nope.env: no such file"), "{err}");
    }

    #[test]
    fn keys_of_the_example_missing_from_the_environment_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".env", "A=1\n");
        write(dir.path(), ".env.example", "A=x\nB=y\n# C=z\nD=w\n");
        let process = BTreeMap::from([("D".to_owned(), "4".to_owned())]);
        let env = Environment::load_with(process, None, dir.path()).unwrap();
        assert_eq!(env.missing_example_keys, ["B"]);
    }

    #[test]
    fn a_key_of_the_example_is_not_missing_while_its_alternative_is_set() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".env", "DIFY_EMAIL=a@b.c\nDIFY_PASSWORD=pw\n");
        write(
            dir.path(),
            ".env.example",
            "DIFY_API_URL=x\nDIFY_API_TOKEN=x\nEXTERNAL_API_URL=x\nEXTERNAL_API_TOKEN=x\n",
        );
        let process = BTreeMap::from([("SINK_FILE_DIR".to_owned(), "/tmp/x".to_owned())]);
        let env = Environment::load_with(process, None, dir.path()).unwrap();
        assert_eq!(env.missing_example_keys, ["DIFY_API_URL"]);
        // Half a login pair replaces nothing.
        write(dir.path(), ".env", "DIFY_EMAIL=a@b.c\n");
        let env = Environment::load_with(BTreeMap::new(), None, dir.path()).unwrap();
        assert_eq!(
            env.missing_example_keys,
            [
                "DIFY_API_TOKEN",
                "DIFY_API_URL",
                "EXTERNAL_API_TOKEN",
                "EXTERNAL_API_URL"
            ]
        );
    }

    #[test]
    fn a_malformed_line_is_named_by_number_without_its_text() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            ".env",
            "A=1\nDIFY_API_TOKEN=secret value here\n",
        );
        let err = Environment::load_with(BTreeMap::new(), None, dir.path()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("line 2 is not NAME=value"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_byte_order_mark_is_ignored_and_a_directory_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "bom.env",
            "\u{feff}LOG_LEVEL=debug\nMAX_RETRY=5\n",
        );
        let env = Environment::load_with(
            BTreeMap::new(),
            Some(&dir.path().join("bom.env")),
            dir.path(),
        )
        .unwrap();
        assert_eq!(env.get("LOG_LEVEL"), Some("debug"));
        let err =
            Environment::load_with(BTreeMap::new(), Some(dir.path()), dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(": is a directory; name the env file inside it"),
            "{err}"
        );
    }

    #[test]
    fn keys_in_any_case_are_one_variable_trimmed_once_and_twice_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            ".env",
            "dify_api_token=tok-canary-1\nState_Dir=\" ./state \"\nDIFY_PASSWORD=\" pw \"\n",
        );
        let env = Environment::load_with(BTreeMap::new(), None, dir.path()).unwrap();
        assert_eq!(env.get("DIFY_API_TOKEN"), Some("tok-canary-1"));
        assert_eq!(env.get("STATE_DIR"), Some("./state"));
        assert_eq!(env.get("DIFY_PASSWORD"), Some(" pw "));
        write(dir.path(), ".env", "LOG_LEVEL=debug\nlog_level=warn\n");
        let err = Environment::load_with(BTreeMap::new(), None, dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("LOG_LEVEL is set twice in the env file ")
                && err
                    .to_string()
                    .ends_with(", as `LOG_LEVEL` and `log_level`; keep one"),
            "{err}"
        );
    }

    #[test]
    fn blank_values_count_as_unset() {
        let env = Environment::from_pairs([("A", "  "), ("B", "x")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.iter().count(), 1);
    }
}
