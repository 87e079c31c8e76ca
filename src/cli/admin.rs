//! The `keys` and `tenants` subcommands: administration straight on the database, for the
//! operator who holds DATABASE_URL (no server needs to run).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use uuid::Uuid;

use crate::config::{KeysCommand, TenantsCommand};
use crate::store::{Limits, Store, TenantError, TenantRecord, LOCAL_TENANT};

pub async fn keys(database_url: &str, command: KeysCommand) -> anyhow::Result<()> {
    let store = Store::connect(database_url)
        .await
        .context("opening the store")?;
    match command {
        KeysCommand::Create {
            tenant,
            label,
            rate_limit_per_minute,
            adopt_local,
            keep_local,
        } => {
            let t = match store.tenant_by_name(&tenant).await? {
                Some(t) => t,
                None => match store.create_tenant(&tenant, &Limits::default()).await {
                    Ok(t) => {
                        eprintln!(
                            "created tenant '{}'; webhook secret: {}",
                            t.name, t.webhook_secret
                        );
                        t
                    }
                    Err(TenantError::Exists(_)) => store
                        .tenant_by_name(&tenant)
                        .await?
                        .context("tenant vanished")?,
                    Err(TenantError::Store(e)) => return Err(e.into()),
                },
            };
            if !keep_local {
                offer_local_data(&store, &t, adopt_local).await?;
            }
            let (key, secret) = store
                .create_key(&t, &label, rate_limit_per_minute.map(i64::from))
                .await?;
            eprintln!(
                "key {} for tenant '{}' (shown once; only its hash is stored):",
                key.id, t.name
            );
            println!("{secret}");
        }
        KeysCommand::List { tenant } => {
            println!(
                "{:<36}  {:<13}  {:<20}  {:<8}  label",
                "id", "prefix", "tenant", "state"
            );
            for k in store.list_keys(tenant.as_deref()).await? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!(
                    "{:<36}  {:<13}  {:<20}  {:<8}  {}",
                    k.id, k.prefix, k.tenant_name, state, k.label
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let id =
                Uuid::parse_str(&id).context("a key id is a UUID (see `compressd keys list`)")?;
            anyhow::ensure!(store.revoke_key(id).await?, "no key with id {id}");
            eprintln!("key {id} revoked");
        }
    }
    store.close().await;
    Ok(())
}

/// The first key ends open mode, and with it the keyless requests' view of what they stored:
/// offers to move that data to the key's tenant so it stays visible.
async fn offer_local_data(store: &Store, t: &TenantRecord, adopt: bool) -> anyhow::Result<()> {
    if t.id == LOCAL_TENANT {
        return Ok(());
    }
    let local = store.local_data().await?;
    if local.is_empty() {
        return Ok(());
    }
    let adopt = adopt
        || ask(&format!(
            "The server stored {local} while it ran without keys (tenant 'local'); no key sees \
         them unless they move. Move them to tenant '{}'? [y/N] ",
            t.name
        ))?;
    if adopt {
        let moved = store.adopt_local_data(&t.id).await?;
        eprintln!("moved {moved} from tenant 'local' to '{}'", t.name);
    } else {
        eprintln!(
            "tenant 'local' keeps {local} from open mode: `compressd keys create --tenant {} \
             --adopt-local` moves them to this tenant, `compressd keys create --tenant local` \
             makes a key that sees them where they are",
            t.name
        );
    }
    Ok(())
}

/// A yes/no question at a terminal; anywhere else the answer is no.
fn ask(question: &str) -> anyhow::Result<bool> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(false);
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

pub async fn tenants(database_url: &str, command: TenantsCommand) -> anyhow::Result<()> {
    let store = Store::connect(database_url)
        .await
        .context("opening the store")?;
    let show = |v: Option<i64>| v.map_or_else(|| "default".to_owned(), |v| v.to_string());
    match command {
        TenantsCommand::List => {
            // Limits first (the columns scripts read), then what each tenant uses now.
            println!(
                "{:<20}  {:>16}  {:>8}  {:>8}  {:>16}  {:>8}  {:>8}",
                "name", "stored bytes", "running", "queued", "stored now", "running", "queued"
            );
            for t in store.list_tenants().await? {
                let l = &t.limits;
                let u = store.usage(&t.id).await?;
                println!(
                    "{:<20}  {:>16}  {:>8}  {:>8}  {:>16}  {:>8}  {:>8}",
                    t.name,
                    show(l.max_stored_bytes),
                    show(l.max_running_jobs),
                    show(l.max_queued_jobs),
                    u.stored_bytes,
                    u.running_jobs,
                    u.queued_jobs
                );
            }
        }
        TenantsCommand::Limits {
            name,
            max_stored_bytes,
            max_running_jobs,
            max_queued_jobs,
            reset,
        } => {
            let tenant = store
                .tenant_by_name(&name)
                .await?
                .with_context(|| format!("no tenant named '{name}'"))?;
            let kept = if reset {
                Limits::default()
            } else {
                tenant.limits
            };
            let limits = Limits {
                max_stored_bytes: max_stored_bytes
                    .map(|b| b.min(i64::MAX as u64) as i64)
                    .or(kept.max_stored_bytes),
                max_running_jobs: max_running_jobs.map(i64::from).or(kept.max_running_jobs),
                max_queued_jobs: max_queued_jobs.map(i64::from).or(kept.max_queued_jobs),
            };
            store
                .set_limits(&name, &limits)
                .await?
                .with_context(|| format!("no tenant named '{name}'"))?;
            eprintln!("limits of '{name}' set");
        }
    }
    store.close().await;
    Ok(())
}
