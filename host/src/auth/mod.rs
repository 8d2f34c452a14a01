//! Who may do what (issue 6, "Who may do what").
//!
//! Five roles, each with a scope stored on the user (migration 0010, `users`):
//!
//! | role | scope | may |
//! |---|---|---|
//! | operations | every county | everything |
//! | county-engineer | one county | read and manage that county's policies; read its decisions and collection figures; no customer records |
//! | station-staff | one station of one county | that station's customers, accounts, decisions, work orders (approve, hold, withdraw an approval, execute, complete a call-before-reconnection order), payments at the counter, onboarding, collection figures; read the county's policies |
//! | auditor | every county | read everything, change nothing |
//! | customer | one account | read that account (balance, ledger, usage, decisions); they pay in the app, whose payment provider's signed notification credits them |
//!
//! A request proves who it is with an API token (`Authorization: Bearer fgt_…`, stored
//! hashed, [`store`]) or a console session cookie ([`SESSION_COOKIE`], argon2 password
//! login, rate-limited). [`Principal::visible`] gives the rows a principal may see for an
//! [`Action`] (handlers add it to their `WHERE`), and [`Principal::authorize`] checks one
//! object. The two-person rule for cutoffs (the approver is not the executor) is enforced
//! where work orders are executed, not here: it depends on the work order's history.

pub mod cli;
pub mod extract;
pub mod store;

use serde::Serialize;
use std::fmt;

/// A role (`users.role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Operations,
    CountyEngineer,
    StationStaff,
    Auditor,
    Customer,
}

impl Role {
    /// Every role, in the order of the table above.
    pub const ALL: [Role; 5] = [
        Role::Operations,
        Role::CountyEngineer,
        Role::StationStaff,
        Role::Auditor,
        Role::Customer,
    ];

    /// The stored name: `operations`, `county-engineer`, `station-staff`, `auditor`, `customer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operations => "operations",
            Role::CountyEngineer => "county-engineer",
            Role::StationStaff => "station-staff",
            Role::Auditor => "auditor",
            Role::Customer => "customer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}: use operations, county-engineer, station-staff, auditor or customer"
                )
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request wants to do. Reads and changes are separate actions so that the
/// auditor's "read everything, change nothing" is one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Customers, meters, agreements, accounts: balance, ledger, usage, payments.
    ReadAccounts,
    /// Policy decisions and their explanations (why charged, warned, cut off).
    ReadDecisions,
    /// Policy versions and activation history.
    ReadPolicies,
    /// Publish, activate, roll back, shadow a county's policies.
    ManagePolicies,
    /// Work orders (approval queue, follow-ups, relay failures).
    ReadWorkOrders,
    /// Approve or hold a work order; withdraw an approval not yet executed; record an
    /// offline follow-up or a call-before-reconnection order done.
    DecideWorkOrders,
    /// Execute an approved cutoff (send the trip); never by its approver.
    ExecuteWorkOrders,
    /// Record a payment (a counter payment by staff, the app channel by the customer).
    RecordPayments,
    /// Onboarding: a new customer, meter and agreement with the initial prepayment.
    Onboard,
    /// Collection coverage and read success rate per station and day.
    ReadCollection,
    /// Users and API tokens.
    ManageUsers,
}

impl Action {
    /// Whether the action only reads.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Action::ReadAccounts
                | Action::ReadDecisions
                | Action::ReadPolicies
                | Action::ReadWorkOrders
                | Action::ReadCollection
        )
    }
}

/// How the principal proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    ApiToken,
    Session,
}

/// The authenticated caller of one request. For a customer, `county` and `station_id`
/// are those of their account (filled in at authentication).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    pub county: Option<String>,
    pub station_id: Option<String>,
    pub account_id: Option<String>,
    pub via: Via,
}

/// The rows a principal may see for one action: `None` in a field means unrestricted on
/// it. Handlers add the set fields to their query's `WHERE`, so a list never leaks rows
/// and a filter the caller asks for narrows it further.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Visibility {
    pub county: Option<String>,
    pub station_id: Option<String>,
    pub account_id: Option<String>,
}

/// Where one object lives: its county, and its station and account where it has them
/// (a policy has only a county; a work order a station; a ledger entry all three).
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub county: &'a str,
    pub station_id: Option<&'a str>,
    pub account_id: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// A county-wide object (a policy version, a county's figures).
    pub fn county(county: &'a str) -> Self {
        Scope {
            county,
            station_id: None,
            account_id: None,
        }
    }
    /// A station's object (a work order, a station's figures).
    pub fn station(county: &'a str, station_id: &'a str) -> Self {
        Scope {
            county,
            station_id: Some(station_id),
            account_id: None,
        }
    }
    /// An account's object.
    pub fn account(county: &'a str, station_id: &'a str, account_id: &'a str) -> Self {
        Scope {
            county,
            station_id: Some(station_id),
            account_id: Some(account_id),
        }
    }
}

impl Visibility {
    const ALL: Visibility = Visibility {
        county: None,
        station_id: None,
        account_id: None,
    };

    /// Whether the object at `scope` is inside. A restriction the scope cannot answer (a
    /// station-restricted principal and a county-wide object) is outside.
    pub fn covers(&self, scope: &Scope<'_>) -> bool {
        fn within(limit: &Option<String>, value: Option<&str>) -> bool {
            match limit {
                None => true,
                Some(l) => value == Some(l.as_str()),
            }
        }
        within(&self.county, Some(scope.county))
            && within(&self.station_id, scope.station_id)
            && within(&self.account_id, scope.account_id)
    }
}

/// A request refused for who is asking (HTTP 403), with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

impl Principal {
    fn county_only(&self) -> Visibility {
        Visibility {
            county: self.county.clone(),
            ..Visibility::ALL
        }
    }
    fn station_only(&self) -> Visibility {
        Visibility {
            county: self.county.clone(),
            station_id: self.station_id.clone(),
            account_id: None,
        }
    }
    fn account_only(&self) -> Visibility {
        Visibility {
            county: self.county.clone(),
            station_id: self.station_id.clone(),
            account_id: self.account_id.clone(),
        }
    }

    /// What this principal may see or touch for `action`, or why it may not at all.
    pub fn visible(&self, action: Action) -> Result<Visibility, Forbidden> {
        use Action::*;
        let allowed = match self.role {
            Role::Operations => Some(Visibility::ALL),
            Role::Auditor => action.is_read().then_some(Visibility::ALL),
            Role::CountyEngineer => match action {
                ReadPolicies | ManagePolicies | ReadDecisions | ReadCollection => {
                    Some(self.county_only())
                }
                _ => None,
            },
            Role::StationStaff => match action {
                ReadPolicies => Some(self.county_only()),
                ReadAccounts | ReadDecisions | ReadWorkOrders | DecideWorkOrders
                | ExecuteWorkOrders | RecordPayments | Onboard | ReadCollection => {
                    Some(self.station_only())
                }
                ManagePolicies | ManageUsers => None,
            },
            Role::Customer => match action {
                // No RecordPayments: a customer's money arrives through a payment
                // channel's signed notification, never by the customer's own word.
                ReadAccounts | ReadDecisions => Some(self.account_only()),
                _ => None,
            },
        };
        allowed.ok_or_else(|| {
            Forbidden(format!(
                "{} ({}) may not {}",
                self.username,
                self.role,
                describe(action)
            ))
        })
    }

    /// Checks one object: allowed when the action is allowed and the object is inside the
    /// principal's scope. The refusal names the action, not the object's details.
    pub fn authorize(&self, action: Action, scope: Scope<'_>) -> Result<(), Forbidden> {
        let v = self.visible(action)?;
        if v.covers(&scope) {
            Ok(())
        } else {
            Err(Forbidden(format!(
                "{} ({}) may not {} outside {}",
                self.username,
                self.role,
                describe(action),
                self.scope_text()
            )))
        }
    }

    /// "county xianyou", "station S01 of xianyou", "account A0001", "every county".
    pub fn scope_text(&self) -> String {
        match (&self.county, &self.station_id, &self.account_id, self.role) {
            (_, _, Some(a), Role::Customer) => format!("account {a}"),
            (Some(c), Some(s), _, _) => format!("station {s} of {c}"),
            (Some(c), None, _, _) => format!("county {c}"),
            _ => "every county".to_string(),
        }
    }
}

fn describe(action: Action) -> &'static str {
    match action {
        Action::ReadAccounts => "read customer accounts",
        Action::ReadDecisions => "read policy decisions",
        Action::ReadPolicies => "read policies",
        Action::ManagePolicies => "manage policies",
        Action::ReadWorkOrders => "read work orders",
        Action::DecideWorkOrders => "approve, hold or withdraw work orders",
        Action::ExecuteWorkOrders => "execute work orders",
        Action::RecordPayments => "record payments",
        Action::Onboard => "onboard customers",
        Action::ReadCollection => "read collection figures",
        Action::ManageUsers => "manage users and tokens",
    }
}

#[cfg(test)]
mod tests;
