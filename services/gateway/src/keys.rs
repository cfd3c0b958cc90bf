//! Virtual keys as the gateway sees them: the keyring (every key and team, from the store and
//! the config file, looked up by the SHA-256 of the presented secret), reloaded whenever the
//! store's governance version changes (polled every 250 ms, so a revoked key is refused by
//! every gateway within that), and the caller's [`Identity`] the auth middleware leaves in
//! the request's extensions.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use llmr_config::{KeyDecl, Settings, TeamDecl};
use llmr_store::governance::{Team, VirtualKey};
use llmr_store::{Store, TaskGuard};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

/// How often the store's governance version is read.
pub const RELOAD_EVERY: Duration = Duration::from_millis(250);

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No auth is configured and no key was presented.
    Open,
    /// `server.token`: unlimited, recorded as the key `default`.
    Default,
    /// A virtual key, with its team.
    Key(Arc<Caller>),
}

/// A virtual key and its team, as admitted.
#[derive(Debug)]
pub struct Caller {
    pub key: VirtualKey,
    pub team: Option<Team>,
    /// The admission subjects of the key and its team (`key/{id}`, `team/{id}`), made once.
    pub key_subject: String,
    pub team_subject: Option<String>,
}

impl Identity {
    /// The key id the request log and spend rows name.
    pub fn key_id(&self) -> &str {
        match self {
            Identity::Open => "",
            Identity::Default => "default",
            Identity::Key(c) => &c.key.id,
        }
    }

    pub fn team_id(&self) -> Option<&str> {
        match self {
            Identity::Key(c) => c.key.team.as_deref(),
            _ => None,
        }
    }

    pub fn caller(&self) -> Option<&Caller> {
        match self {
            Identity::Key(c) => Some(c),
            _ => None,
        }
    }

    /// Whether it may use `model` (a model or group name): the key's and its team's globs.
    pub fn allows_model(&self, model: &str) -> bool {
        self.caller().is_none_or(|c| {
            let team = c.team.as_ref().map(|t| &t.models);
            llmr_protocol::allowed(std::iter::once(&c.key.models).chain(team), model)
        })
    }

    /// The tool allowlists a request carries to mcp-tools and the tool loop: the key's and
    /// its team's, each that is set (every one must allow a tool).
    pub fn tool_lists(&self) -> Vec<Vec<String>> {
        let Some(c) = self.caller() else {
            return Vec::new();
        };
        std::iter::once(&c.key.tools)
            .chain(c.team.as_ref().map(|t| &t.tools))
            .filter(|l| !l.is_empty())
            .cloned()
            .collect()
    }

    /// The response cache's scope for this caller (`cache.scope`).
    pub fn cache_scope(&self, scope: llmr_config::CacheScope) -> String {
        use llmr_config::CacheScope;
        match (scope, self) {
            (CacheScope::Global, _) | (_, Identity::Open) => String::new(),
            (CacheScope::Team, Identity::Key(c)) if c.key.team.is_some() => {
                format!("team/{}", c.key.team.as_deref().unwrap_or_default())
            }
            (_, i) => format!("key/{}", i.key_id()),
        }
    }
}

/// SHA-256 of a secret, hex: how keys are stored and found.
pub fn hash_secret(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.trim().as_bytes()))
}

/// How every virtual key's secret begins.
pub const SECRET_PREFIX: &str = "sk-llmr-";

/// A new secret: `sk-llmr-` and 32 random bytes in URL-safe base64.
pub fn new_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The part of a secret people may see: `sk-llmr-Ab…yz`.
pub fn hint(secret: &str) -> String {
    let n = secret.chars().count();
    let head: String = secret.chars().take(10).collect();
    let tail: String = secret.chars().skip(n.saturating_sub(4)).collect();
    format!("{head}…{tail}")
}

fn key_of(d: &KeyDecl) -> VirtualKey {
    let secret = d.key.expose_secret();
    VirtualKey {
        id: d.key_id().to_owned(),
        name: d.name.clone(),
        hash: if secret.is_empty() {
            d.hash.to_lowercase()
        } else {
            hash_secret(secret)
        },
        hint: if secret.is_empty() { String::new() } else { hint(secret) },
        team: d.team.clone(),
        models: d.models.clone(),
        tools: d.tools.clone(),
        limits: d.limits.clone(),
        expires_at_ms: d.expires_at.as_deref().and_then(llmr_config::rfc3339_ms),
        metadata: serde_json::to_value(&d.metadata).unwrap_or_default(),
        created_ms: 0,
        revoked_ms: None,
        from_config: true,
    }
}

fn team_of(d: &TeamDecl) -> Team {
    Team {
        id: d.team_id().to_owned(),
        name: d.name.clone(),
        models: d.models.clone(),
        tools: d.tools.clone(),
        limits: d.limits.clone(),
        metadata: serde_json::Value::Null,
        created_ms: 0,
        from_config: true,
    }
}

/// Every key and team, by id: the config file's, overridden by the store's of the same id.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub keys: BTreeMap<String, VirtualKey>,
    pub teams: BTreeMap<String, Team>,
    by_hash: BTreeMap<String, Arc<Caller>>,
    version: Option<u64>,
}

impl Snapshot {
    fn build(keys: BTreeMap<String, VirtualKey>, teams: BTreeMap<String, Team>, version: Option<u64>) -> Snapshot {
        let by_hash = keys
            .values()
            .map(|k| {
                let team = k.team.as_ref().and_then(|t| teams.get(t)).cloned();
                let caller = Caller {
                    key_subject: k.subject(),
                    team_subject: team.as_ref().map(Team::subject),
                    key: k.clone(),
                    team,
                };
                (k.hash.clone(), Arc::new(caller))
            })
            .collect();
        Snapshot {
            keys,
            teams,
            by_hash,
            version,
        }
    }
}

/// The gateway's copy of every key and team.
pub struct Keyring {
    config_keys: Vec<VirtualKey>,
    config_teams: Vec<Team>,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Keyring {
    pub fn new(settings: &Settings) -> Keyring {
        let config_keys: Vec<VirtualKey> = settings.keys.iter().map(key_of).collect();
        let config_teams: Vec<Team> = settings.teams.iter().map(team_of).collect();
        let snapshot = Snapshot::build(
            config_keys.iter().map(|k| (k.id.clone(), k.clone())).collect(),
            config_teams.iter().map(|t| (t.id.clone(), t.clone())).collect(),
            None,
        );
        Keyring {
            config_keys,
            config_teams,
            snapshot: RwLock::new(Arc::new(snapshot)),
        }
    }

    /// What the gateway knows now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key whose secret hashes to `hash`.
    pub fn find(&self, hash: &str) -> Option<Arc<Caller>> {
        self.snapshot().by_hash.get(hash).cloned()
    }

    /// Reads the store again when its governance version moved (or `force`).
    pub async fn reload(&self, store: &Store, force: bool) -> Result<(), llmr_store::StoreError> {
        let version = store.gov_version().await?;
        if !force && self.snapshot().version == Some(version) {
            return Ok(());
        }
        let (stored_keys, stored_teams) = (store.gov_keys().await?, store.gov_teams().await?);
        let mut keys: BTreeMap<String, VirtualKey> =
            self.config_keys.iter().map(|k| (k.id.clone(), k.clone())).collect();
        keys.extend(stored_keys.into_iter().map(|k| (k.id.clone(), k)));
        let mut teams: BTreeMap<String, Team> = self.config_teams.iter().map(|t| (t.id.clone(), t.clone())).collect();
        teams.extend(stored_teams.into_iter().map(|t| (t.id.clone(), t)));
        let next = Arc::new(Snapshot::build(keys, teams, Some(version)));
        // Two reloads may overlap (the poll and an unknown key's): the one that read an older
        // version must not replace what the other read.
        let mut current = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        if current.version.is_none_or(|v| v <= version) {
            *current = next;
        }
        Ok(())
    }

    /// Reloads every [`RELOAD_EVERY`] until the guard is dropped.
    pub fn watch(self: &Arc<Self>, store: Store) -> TaskGuard {
        let ring = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = ring.reload(&store, false).await {
                    tracing::debug!(error = %e, "could not reload virtual keys");
                }
            }
        });
        TaskGuard::new(task.abort_handle())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_look_like_keys_and_hash_stably() {
        let s = new_secret();
        assert!(s.starts_with("sk-llmr-") && s.len() > 40);
        assert_eq!(hash_secret(&s), hash_secret(&s));
        assert_eq!(hash_secret(&s).len(), 64);
        assert!(hint(&s).starts_with("sk-llmr-"));
        assert!(!hint(&s).contains(&s[12..30]));
    }
}
