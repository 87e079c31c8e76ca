//! The `keys` and `tenants` subcommands: administration straight on the database, for the
//! operator who holds DATABASE_URL (no server needs to run).

use anyhow::Context;
use uuid::Uuid;

use crate::config::{KeysCommand, TenantsCommand};
use crate::store::{Limits, Store, TenantError};

pub async fn keys(database_url: &str, command: KeysCommand) -> anyhow::Result<()> {
    let store = Store::connect(database_url)
        .await
        .context("opening the store")?;
    match command {
        KeysCommand::Create {
            tenant,
            label,
            rate_limit_per_minute,
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

pub async fn tenants(database_url: &str, command: TenantsCommand) -> anyhow::Result<()> {
    let store = Store::connect(database_url)
        .await
        .context("opening the store")?;
    let show = |v: Option<i64>| v.map_or_else(|| "default".to_owned(), |v| v.to_string());
    match command {
        TenantsCommand::List => {
            println!(
                "{:<20}  {:>16}  {:>8}  {:>8}",
                "name", "stored bytes", "running", "queued"
            );
            for t in store.list_tenants().await? {
                let l = &t.limits;
                println!(
                    "{:<20}  {:>16}  {:>8}  {:>8}",
                    t.name,
                    show(l.max_stored_bytes),
                    show(l.max_running_jobs),
                    show(l.max_queued_jobs)
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
