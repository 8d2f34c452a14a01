//! `feegate user …` and `feegate token …`: people and systems that may reach `serve`.

use super::Role;
use super::store::{self, NewUser};
use crate::db::Db;
use clap::{Args, Subcommand};
use std::io::BufRead;

/// `feegate user`.
#[derive(Args, Debug)]
pub struct UserArgs {
    #[arg(
        long,
        env = "FEEGATE_DB",
        default_value = "sqlite://feegate.db",
        global = true
    )]
    pub db: String,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. Scope by role: county-engineer needs --county; station-staff needs
    /// --county and --station; customer needs --account; operations and auditor take none.
    Add {
        username: String,
        /// operations, county-engineer, station-staff, auditor or customer.
        #[arg(long)]
        role: Role,
        #[arg(long)]
        county: Option<String>,
        #[arg(long)]
        station: Option<String>,
        #[arg(long)]
        account: Option<String>,
        /// Read a console password (at least 12 characters) from the first line of stdin.
        /// Without it the user has API tokens only.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's console password from the first line of stdin; ends their sessions.
    Password { username: String },
    /// Disable a user: their tokens and sessions stop working at once.
    Disable { username: String },
    /// List users (no secrets).
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `feegate token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    #[arg(
        long,
        env = "FEEGATE_DB",
        default_value = "sqlite://feegate.db",
        global = true
    )]
    pub db: String,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue an API token for a user. The token is printed once; only its hash is kept.
    Issue {
        username: String,
        /// What the token is for (e.g. "billing-system export").
        #[arg(long)]
        label: String,
        /// Days until it expires, 1..=3650 (default: until revoked; 0 would issue a token
        /// that is already expired).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: Option<u32>,
    },
    /// Revoke a token by its number.
    Revoke { token_id: i64 },
}

fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!pw.is_empty(), "no password on stdin");
    Ok(pw)
}

/// Runs `feegate user …`.
pub async fn run_user(args: UserArgs) -> anyhow::Result<()> {
    // `user list` only reads: it never creates a database (a mistyped path is an error).
    let db = match &args.command {
        UserCommand::List { .. } => Db::open_existing(&args.db).await?,
        _ => Db::open(&args.db).await?,
    };
    match args.command {
        UserCommand::Add {
            username,
            role,
            county,
            station,
            account,
            password_stdin,
        } => {
            let password = if password_stdin {
                Some(password_from_stdin()?)
            } else {
                None
            };
            let id = store::create_user(
                &db,
                &NewUser {
                    username: username.clone(),
                    role: Some(role),
                    county,
                    station_id: station,
                    account_id: account,
                    password,
                },
            )
            .await?;
            println!("user #{id} {username} ({role}) created");
        }
        UserCommand::Password { username } => {
            store::set_password(&db, &username, &password_from_stdin()?).await?;
            println!("{username}: password set; open sessions ended");
        }
        UserCommand::Disable { username } => {
            store::disable_user(&db, &username).await?;
            println!("{username}: disabled; tokens and sessions no longer work");
        }
        UserCommand::List { json } => {
            let users = store::list_users(&db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                for u in users {
                    let scope = [u.county, u.station_id, u.account_id]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("/");
                    println!(
                        "#{:<4} {:<20} {:<16} {:<20} console:{} tokens:{}{}",
                        u.user_id,
                        u.username,
                        u.role,
                        if scope.is_empty() { "-".into() } else { scope },
                        if u.console_login { "yes" } else { "no" },
                        u.live_tokens,
                        if u.disabled { " DISABLED" } else { "" }
                    );
                }
            }
        }
    }
    Ok(())
}

/// Runs `feegate token …`.
pub async fn run_token(args: TokenArgs) -> anyhow::Result<()> {
    let db = Db::open(&args.db).await?;
    match args.command {
        TokenCommand::Issue {
            username,
            label,
            days,
        } => {
            let t = store::issue_token(&db, &username, &label, days).await?;
            eprintln!(
                "token #{} for {username}; shown once, keep it secret{}",
                t.token_id,
                match days {
                    Some(d) => format!("; expires in {d} days"),
                    None => String::new(),
                }
            );
            println!("{}", t.token);
        }
        TokenCommand::Revoke { token_id } => {
            store::revoke_token(&db, token_id).await?;
            println!("token #{token_id} revoked");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `feegate token …` as clap sees it.
    #[derive(Parser, Debug)]
    struct Token {
        #[command(flatten)]
        args: TokenArgs,
    }

    #[test]
    fn a_token_lives_one_day_to_ten_years_or_until_revoked() {
        let parse = |days: &str| {
            Token::try_parse_from(["token", "issue", "ops", "--label", "export", "--days", days])
        };
        for refused in ["0", "3651", "seven"] {
            let e = parse(refused).expect_err(refused).to_string();
            assert!(e.contains("--days"), "{refused}: {e}");
        }
        for (given, kept) in [("1", 1), ("3650", 3650)] {
            match parse(given).expect(given).args.command {
                TokenCommand::Issue { days, .. } => assert_eq!(days, Some(kept)),
                other => panic!("{other:?}"),
            }
        }
    }
}
