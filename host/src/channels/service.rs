//! Start-up of the channel endpoints: recovery sweep, inbox writer, reconnection,
//! auto-debit loop. `feegate serve` mounts [`super::router`] with its state.

use super::config::{ChannelKey, ChannelsConfig};
use super::inbox::{FailurePoints, Inbox, InboxContext};
use super::reconnect::Reconnector;
use super::{ChannelsState, router};
use crate::clock::Clock;
use crate::db::Db;
use crate::job::Host;
use std::net::SocketAddr;
use std::sync::Arc;

/// How often the inbox is swept for notifications left `received`.
pub const SWEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

/// A running set of channel endpoints (not yet listening).
pub struct Service {
    pub state: ChannelsState,
    pub reconnector: Option<Reconnector>,
    pub failure_points: Arc<FailurePoints>,
    /// Notifications the recovery sweep applied at start-up.
    pub recovered: u32,
}

impl Service {
    /// Applies what a crash left recorded but unapplied, starts reconnection for
    /// accounts in credit with an open relay, then starts the inbox writer. With no
    /// `host`, payments are applied but reconnection is left to the daily job.
    pub async fn start(
        db: Db,
        config: ChannelsConfig,
        clock: Arc<dyn Clock>,
        host: Option<Arc<Host>>,
    ) -> anyhow::Result<Self> {
        let reconnector = host.map(Reconnector::new);
        let recovered =
            super::inbox::recover(&db, clock.as_ref(), reconnector.as_ref(), None).await?;
        if recovered > 0 {
            tracing::warn!(recovered, "applied notifications recorded before a crash");
        }
        if let Some(r) = &reconnector {
            let waiting: Vec<String> = sqlx::query(
                "SELECT a.account_id FROM accounts a WHERE a.relay_state = 'open' AND a.balance_fen >= 0
                   AND NOT EXISTS (SELECT 1 FROM relay_commands c WHERE c.account_id = a.account_id
                                   AND c.status IN ('pending', 'issuing', 'awaiting-confirmation', 'awaiting-customer'))",
            )
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|row| sqlx::Row::try_get(row, 0))
            .collect::<Result<_, _>>()?;
            for account in waiting {
                r.request(&account, std::time::Instant::now());
            }
        }
        {
            // Rows a failed batch left `received` are applied within about two minutes
            // even if their channel never sends them again.
            let (db, clock, reconnector) = (db.clone(), clock.clone(), reconnector.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SWEEP_PERIOD).await;
                    let before = clock.now() - chrono::Duration::minutes(1);
                    match super::inbox::recover(
                        &db,
                        clock.as_ref(),
                        reconnector.as_ref(),
                        Some(before),
                    )
                    .await
                    {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(
                            applied = n,
                            "inbox sweep applied notifications left received"
                        ),
                        Err(e) => tracing::error!(error = %e, "inbox sweep failed"),
                    }
                }
            });
        }
        let failure_points = Arc::new(FailurePoints::default());
        // SQLite: one writer (its pool has one connection). PostgreSQL: half the pool,
        // the other half for reconnection and the rest of the host.
        let writers = (db.pool.options().get_max_connections() as usize / 2).max(1);
        let inbox = Inbox::start(
            InboxContext {
                db,
                clock,
                reconnector: reconnector.clone(),
                auto_debit: config.auto_debit.clone(),
                failure_points: failure_points.clone(),
            },
            writers,
        );
        Ok(Self {
            state: ChannelsState {
                config: Arc::new(config),
                inbox,
            },
            reconnector,
            failure_points,
            recovered,
        })
    }

    /// Serves on an ephemeral loopback port in the background (tests, bench); returns it.
    pub async fn spawn_loopback(&self) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = router(self.state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }

    /// Runs auto-debit every `period`: collects the warning decisions' requests and sends
    /// due ones to the bank. No-op without `[auto_debit]`.
    pub fn spawn_auto_debit(&self, db: Db, clock: Arc<dyn Clock>, period: std::time::Duration) {
        let Some(cfg) = self.state.config.auto_debit.clone() else {
            return;
        };
        let Some(super::config::ChannelConfig {
            key: ChannelKey::Hmac(secret),
            ..
        }) = self.state.config.channels.get(&cfg.channel).cloned()
        else {
            return; // refused when the config was loaded
        };
        let bank = crate::autodebit::BankAdapter {
            client: reqwest::Client::new(),
            config: cfg,
            secret,
        };
        tokio::spawn(async move {
            loop {
                let now = clock.now();
                let result = async {
                    crate::autodebit::collect_requests(&db, now).await?;
                    crate::autodebit::dispatch(&db, &bank, now).await
                }
                .await;
                match result {
                    Ok(r) if r != Default::default() => tracing::info!(?r, "auto-debit pass"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "auto-debit pass failed"),
                }
                tokio::time::sleep(period).await;
            }
        });
    }
}
