//! The credentials the configuration provides for the console API, for every Dify version
//! (`docs/console-api.md#authentication`):
//!
//! - an admin API key: `Authorization: Bearer <key>` + `X-WORKSPACE-ID`; nothing to renew;
//! - a console access token: `Authorization: Bearer`; nothing to renew (a 401 is final);
//! - an email and password, logged in by the [`Session`](super::session::Session).

use uuid::Uuid;

use crate::secret::Secret;

/// `DIFY_PASSWORD_ENCODING`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, strum::EnumString, strum::Display)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub(crate) enum PasswordEncoding {
    /// Learn it: see `encodings_to_try`.
    #[default]
    Auto,
    /// Dify ≤ 1.11.1.
    Plain,
    /// Dify ≥ 1.11.2.
    Base64,
}

/// The credentials the configuration provides.
#[derive(Debug, Clone)]
pub(crate) enum DifyAuth {
    /// An admin API key acting as the owner of one workspace (`X-WORKSPACE-ID`).
    AdminKey { key: Secret, workspace_id: Uuid },
    /// A console access token sent as `Authorization: Bearer`.
    ConsoleToken(Secret),
    /// Console login with an account's email and password.
    Login {
        email: String,
        password: Secret,
        encoding: PasswordEncoding,
    },
}
