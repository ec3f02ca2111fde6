//! The tables and columns the database source reads, with the Dify migration that created each, so
//! that a database too old (or not Dify's) fails with a message naming what is missing and since when
//! Dify has it, and a role without `SELECT` fails with the `GRANT` that fixes it. Both dialects ask
//! their server the same questions and get the same verdict.

use super::settings::Dialect;

/// Where a column comes from in Dify's history.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    pub(crate) migration: &'static str,
    pub(crate) dify_version: &'static str,
}

/// `64b051264f32_init.py` (2023-05-13): apps, accounts, end_users, messages.
const INIT: Origin = Origin {
    migration: "64b051264f32",
    dify_version: "0.3.0",
};
/// `b289e2408ee2_add_workflow.py` (2024-02-19): workflow_runs, workflow_node_executions.
const WORKFLOW: Origin = Origin {
    migration: "b289e2408ee2",
    dify_version: "0.6.0",
};
/// `e2eacc9a1b63_add_status_for_message.py` (2024-03-21): messages.invoke_from.
const INVOKE_FROM: Origin = Origin {
    migration: "e2eacc9a1b63",
    dify_version: "0.6.0",
};

/// Every (table, columns, origin) read; the queries in `postgres` use nothing else.
pub(super) const REQUIRED: [(&str, &[&str], Origin); 7] = [
    ("apps", &["id", "tenant_id", "name", "mode"], INIT),
    ("accounts", &["id", "email"], INIT),
    ("end_users", &["id", "session_id"], INIT),
    (
        "messages",
        &[
            "id",
            "app_id",
            "model_provider",
            "model_id",
            "message_tokens",
            "answer_tokens",
            "total_price",
            "currency",
            "from_end_user_id",
            "from_account_id",
            "created_at",
        ],
        INIT,
    ),
    ("messages", &["invoke_from"], INVOKE_FROM),
    (
        "workflow_runs",
        &[
            "id",
            "tenant_id",
            "app_id",
            "workflow_id",
            "triggered_from",
            "created_by_role",
            "created_by",
            "created_at",
        ],
        WORKFLOW,
    ),
    (
        "workflow_node_executions",
        &[
            "id",
            "tenant_id",
            "app_id",
            "workflow_id",
            "workflow_run_id",
            "triggered_from",
            "node_type",
            "process_data",
            "execution_metadata",
            "created_at",
        ],
        WORKFLOW,
    ),
];

/// What the server said about one required column.
#[derive(Debug)]
pub(super) struct ColumnCheck {
    pub(crate) table: String,
    pub(crate) column: String,
    pub(crate) table_exists: bool,
    pub(crate) can_select: bool,
    pub(crate) column_exists: bool,
    /// The column's type as the server names it (PostgreSQL `text`, `uuid`, `jsonb`; MySQL
    /// `char`, `longtext`, `json`).
    pub(crate) column_type: Option<String>,
}

/// Who reads, in the words of the server's `GRANT`: the dialect, the role (PostgreSQL) or
/// `'user'@'host'` account (MySQL), and the database the tables are in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reader<'a> {
    pub(crate) dialect: Dialect,
    pub(crate) role: &'a str,
    pub(crate) database: &'a str,
}

impl Reader<'_> {
    /// The statements that give the reader `SELECT` on `tables`: PostgreSQL takes a list, MySQL one
    /// table per statement.
    fn grant(&self, tables: &[&str]) -> String {
        match self.dialect {
            Dialect::Postgres => format!("GRANT SELECT ON {} TO {};", tables.join(", "), self.role),
            Dialect::Mysql => tables
                .iter()
                .map(|t| {
                    format!(
                        "GRANT SELECT ON `{}`.`{t}` TO {};",
                        self.database, self.role
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// What a column read as it is holds, whatever the dialect calls its type.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Uuid,
    Text,
}

impl Kind {
    /// The types Dify's migrations give such a column: `StringUUID` is `uuid` on PostgreSQL and
    /// `CHAR(36)` elsewhere, `LongText` is `text` or `LONGTEXT` (Dify's `api/models/types.py`).
    fn types(self, dialect: Dialect) -> &'static [&'static str] {
        match (self, dialect) {
            (Kind::Uuid, Dialect::Postgres) => &["uuid"],
            (Kind::Text, Dialect::Postgres) => &["text", "character varying"],
            (Kind::Uuid, Dialect::Mysql) => &["char", "varchar"],
            (Kind::Text, Dialect::Mysql) => &["longtext", "mediumtext", "text", "varchar"],
        }
    }
}

/// The columns read into a Rust type as they are (no cast in the SQL), with the types Dify's
/// migrations give them: another type (`jsonb` where Dify writes `text`) cannot be converted, and is
/// named before anything is read.
const READ_AS: [(&str, &str, Kind); 12] = [
    ("apps", "id", Kind::Uuid),
    ("apps", "tenant_id", Kind::Uuid),
    ("apps", "name", Kind::Text),
    ("apps", "mode", Kind::Text),
    ("messages", "id", Kind::Uuid),
    ("messages", "app_id", Kind::Uuid),
    ("messages", "currency", Kind::Text),
    ("workflow_runs", "app_id", Kind::Uuid),
    ("workflow_node_executions", "id", Kind::Uuid),
    ("workflow_node_executions", "process_data", Kind::Text),
    ("workflow_node_executions", "execution_metadata", Kind::Text),
    ("end_users", "session_id", Kind::Text),
];

/// The problem with a column's type, if it is one the exporter cannot read.
fn type_problem(check: &ColumnCheck, dialect: Dialect) -> Option<String> {
    let found = check.column_type.as_deref()?;
    let (_, _, kind) = READ_AS
        .iter()
        .find(|(t, c, _)| *t == check.table && *c == check.column)?;
    let allowed = kind.types(dialect);
    (!allowed.contains(&found)).then(|| {
        format!(
            "column {}.{} has type {found}, where Dify writes {} (the exporter reads it as that)",
            check.table,
            check.column,
            allowed.join(" or ")
        )
    })
}

/// Every (table, column) pair, flattened, for the check query.
pub(super) fn required_pairs() -> (Vec<&'static str>, Vec<&'static str>) {
    REQUIRED
        .iter()
        .flat_map(|(table, columns, _)| columns.iter().map(move |c| (*table, *c)))
        .unzip()
}

fn origin(table: &str, column: Option<&str>) -> Origin {
    REQUIRED
        .iter()
        .find(|(t, columns, _)| *t == table && column.is_none_or(|c| columns.contains(&c)))
        .map_or(INIT, |(_, _, origin)| *origin)
}

/// One message for everything wrong, or `None` when every table and column is readable.
pub(super) fn verdict(checks: &[ColumnCheck], reader: Reader<'_>) -> Option<String> {
    let mut missing_tables: Vec<&str> = Vec::new();
    let mut unreadable: Vec<&str> = Vec::new();
    let mut missing_columns: Vec<String> = Vec::new();
    for check in checks {
        let table = check.table.as_str();
        if !check.table_exists {
            if !missing_tables.contains(&table) {
                missing_tables.push(table);
            }
        } else if !check.can_select {
            if !unreadable.contains(&table) {
                unreadable.push(table);
            }
        } else if let Some(problem) = type_problem(check, reader.dialect) {
            missing_columns.push(problem);
        } else if !check.column_exists {
            let origin = origin(table, Some(&check.column));
            missing_columns.push(format!(
                "column {table}.{} is missing (added in Dify {} by migration {})",
                check.column, origin.dify_version, origin.migration
            ));
        }
    }
    let mut parts: Vec<String> = missing_tables
        .iter()
        .map(|table| {
            let origin = origin(table, None);
            format!(
                "table {table} is missing (created in Dify {} by migration {})",
                origin.dify_version, origin.migration
            )
        })
        .collect();
    parts.extend(missing_columns);
    if !parts.is_empty() {
        return Some(format!(
            "the database is not a Dify database the exporter can read: {}; check that DIFY_DATABASE_URL names Dify's database (Dify 0.6.0 or newer), or use the console API source",
            parts.join("; ")
        ));
    }
    if !unreadable.is_empty() {
        return Some(format!(
            "the role {} lacks SELECT on {}; run as an administrator: {}",
            reader.role,
            unreadable.join(", "),
            reader.grant(&unreadable)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const RO: Reader<'static> = Reader {
        dialect: Dialect::Postgres,
        role: "ro",
        database: "dify",
    };

    fn check(table: &str, column: &str, flags: (bool, bool, bool)) -> ColumnCheck {
        ColumnCheck {
            table: table.into(),
            column: column.into(),
            table_exists: flags.0,
            can_select: flags.1,
            column_exists: flags.2,
            column_type: None,
        }
    }

    #[test]
    fn a_column_of_another_type_is_named_with_the_type_dify_writes() {
        let message = verdict(
            &[ColumnCheck {
                column_type: Some("jsonb".into()),
                ..check(
                    "workflow_node_executions",
                    "process_data",
                    (true, true, true),
                )
            }],
            RO,
        )
        .unwrap();
        assert!(
            message.contains(
                "column workflow_node_executions.process_data has type jsonb, where Dify writes text or character varying"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_missing_column_names_its_migration_and_version() {
        let message = verdict(
            &[
                check("apps", "mode", (true, true, true)),
                check("messages", "invoke_from", (true, true, false)),
            ],
            RO,
        )
        .unwrap();
        assert!(
            message.contains(
                "column messages.invoke_from is missing (added in Dify 0.6.0 by migration e2eacc9a1b63)"
            ),
            "{message}"
        );
    }

    #[test]
    fn unreadable_tables_come_with_the_grant_that_fixes_them() {
        let message = verdict(
            &[
                check("accounts", "email", (true, false, true)),
                check("accounts", "id", (true, false, true)),
                check("end_users", "id", (true, false, true)),
            ],
            RO,
        )
        .unwrap();
        assert!(
            message.ends_with("GRANT SELECT ON accounts, end_users TO ro;"),
            "{message}"
        );
        let mysql = Reader {
            dialect: Dialect::Mysql,
            role: "'ro'@'%'",
            database: "dify",
        };
        let message = verdict(&[check("accounts", "id", (true, false, true))], mysql).unwrap();
        assert!(
            message.ends_with("GRANT SELECT ON `dify`.`accounts` TO 'ro'@'%';"),
            "{message}"
        );
    }

    #[test]
    fn a_mysql_char_36_id_and_longtext_json_are_what_dify_writes_there() {
        let mysql = Reader {
            dialect: Dialect::Mysql,
            role: "'ro'@'%'",
            database: "dify",
        };
        let typed = |table: &str, column: &str, found: &str| ColumnCheck {
            column_type: Some(found.into()),
            ..check(table, column, (true, true, true))
        };
        assert!(
            verdict(
                &[
                    typed("apps", "id", "char"),
                    typed("workflow_node_executions", "process_data", "longtext")
                ],
                mysql
            )
            .is_none()
        );
        let message = verdict(
            &[typed("workflow_node_executions", "process_data", "json")],
            mysql,
        )
        .unwrap();
        assert!(
            message.contains(
                "has type json, where Dify writes longtext or mediumtext or text or varchar"
            ),
            "{message}"
        );
    }

    #[test]
    fn every_required_pair_is_checked() {
        let (tables, columns) = required_pairs();
        assert_eq!(tables.len(), columns.len());
        assert_eq!(tables.len(), 38);
        assert!(verdict(&[], RO).is_none());
        for (table, column, _) in READ_AS {
            assert!(
                tables
                    .iter()
                    .zip(&columns)
                    .any(|(t, c)| (*t, *c) == (table, column)),
                "{table}.{column} is read but not checked"
            );
        }
    }
}
