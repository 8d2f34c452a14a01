//! The role table of the module docs, as a specification: every role against every
//! action, inside and outside its scope.

use super::*;

fn who(role: Role) -> Principal {
    let (county, station, account) = match role {
        Role::Operations | Role::Auditor => (None, None, None),
        Role::CountyEngineer => (Some("xianyou"), None, None),
        Role::StationStaff => (Some("xianyou"), Some("S01"), None),
        // A customer's county and station come from their account.
        Role::Customer => (Some("xianyou"), Some("S01"), Some("A0001")),
    };
    Principal {
        user_id: 1,
        username: format!("{role}-user"),
        role,
        county: county.map(str::to_string),
        station_id: station.map(str::to_string),
        account_id: account.map(str::to_string),
        via: Via::ApiToken,
    }
}

const HOME: Scope<'static> = Scope {
    county: "xianyou",
    station_id: Some("S01"),
    account_id: Some("A0001"),
};
const NEIGHBOUR_ACCOUNT: Scope<'static> = Scope {
    county: "xianyou",
    station_id: Some("S01"),
    account_id: Some("A0002"),
};
const OTHER_STATION: Scope<'static> = Scope {
    county: "xianyou",
    station_id: Some("S02"),
    account_id: Some("A0100"),
};
const OTHER_COUNTY: Scope<'static> = Scope {
    county: "putian",
    station_id: Some("P01"),
    account_id: Some("B0001"),
};

const ACTIONS: [Action; 11] = [
    Action::ReadAccounts,
    Action::ReadDecisions,
    Action::ReadPolicies,
    Action::ManagePolicies,
    Action::ReadWorkOrders,
    Action::DecideWorkOrders,
    Action::ExecuteWorkOrders,
    Action::RecordPayments,
    Action::Onboard,
    Action::ReadCollection,
    Action::ManageUsers,
];

/// Which actions each role may take at all (in its own scope).
fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::Operations => true,
        Role::Auditor => matches!(
            action,
            ReadAccounts | ReadDecisions | ReadPolicies | ReadWorkOrders | ReadCollection
        ),
        Role::CountyEngineer => matches!(
            action,
            ReadPolicies | ManagePolicies | ReadDecisions | ReadCollection
        ),
        Role::StationStaff => !matches!(action, ManagePolicies | ManageUsers),
        Role::Customer => matches!(action, ReadAccounts | ReadDecisions),
    }
}

#[test]
fn each_role_may_take_exactly_its_actions_in_its_own_scope() {
    for role in Role::ALL {
        let p = who(role);
        for action in ACTIONS {
            let got = p.authorize(action, HOME).is_ok();
            assert_eq!(got, allowed(role, action), "{role} {action:?} at home");
        }
    }
}

#[test]
fn no_role_but_operations_and_auditor_reaches_another_county() {
    for role in Role::ALL {
        let p = who(role);
        for action in ACTIONS {
            let got = p.authorize(action, OTHER_COUNTY).is_ok();
            let want = match role {
                Role::Operations => true,
                Role::Auditor => action.is_read(),
                _ => false,
            };
            assert_eq!(got, want, "{role} {action:?} in another county");
        }
    }
}

#[test]
fn station_staff_stay_in_their_station_and_customers_in_their_account() {
    let staff = who(Role::StationStaff);
    let customer = who(Role::Customer);
    for action in ACTIONS {
        assert!(
            staff.authorize(action, OTHER_STATION).is_err() || action == Action::ReadPolicies,
            "staff {action:?} at another station"
        );
        assert_eq!(
            staff.authorize(action, NEIGHBOUR_ACCOUNT).is_ok(),
            allowed(Role::StationStaff, action),
            "staff {action:?} for another account of their station"
        );
        assert!(
            customer.authorize(action, NEIGHBOUR_ACCOUNT).is_err(),
            "customer {action:?} on a neighbour's account"
        );
    }
    // A county-wide object (a policy) is outside a station's or an account's scope,
    // except the policies themselves, which staff read to explain decisions.
    assert!(
        staff
            .authorize(Action::ReadPolicies, Scope::county("xianyou"))
            .is_ok()
    );
    assert!(
        staff
            .authorize(Action::ReadWorkOrders, Scope::county("xianyou"))
            .is_err()
    );
    assert!(
        customer
            .authorize(Action::ReadAccounts, Scope::county("xianyou"))
            .is_err()
    );
}

#[test]
fn a_county_engineer_manages_only_their_county_and_sees_no_customer_records() {
    let e = who(Role::CountyEngineer);
    assert!(
        e.authorize(Action::ManagePolicies, Scope::county("xianyou"))
            .is_ok()
    );
    assert!(
        e.authorize(Action::ManagePolicies, Scope::county("putian"))
            .is_err()
    );
    assert!(e.authorize(Action::ReadAccounts, HOME).is_err());
    assert!(e.authorize(Action::DecideWorkOrders, HOME).is_err());
}

#[test]
fn visibility_narrows_lists_to_the_principal_scope() {
    let staff = who(Role::StationStaff)
        .visible(Action::ReadAccounts)
        .unwrap();
    assert_eq!(staff.county.as_deref(), Some("xianyou"));
    assert_eq!(staff.station_id.as_deref(), Some("S01"));
    assert_eq!(staff.account_id, None);
    let customer = who(Role::Customer).visible(Action::ReadAccounts).unwrap();
    assert_eq!(customer.account_id.as_deref(), Some("A0001"));
    assert_eq!(
        who(Role::Auditor).visible(Action::ReadAccounts).unwrap(),
        Visibility::default()
    );
    let refused = who(Role::Auditor)
        .visible(Action::RecordPayments)
        .unwrap_err();
    assert!(refused.0.contains("may not record payments"), "{refused}");
}

#[test]
fn roles_parse_from_their_stored_names_only() {
    for role in Role::ALL {
        assert_eq!(role.as_str().parse::<Role>(), Ok(role));
    }
    let err = "admin".parse::<Role>().unwrap_err();
    assert!(err.contains("operations, county-engineer"), "{err}");
}
