//! The console's templates: minijinja, with the template sources embedded in the binary
//! at build time (`include_str!`), so the server needs no files at run time.
//!
//! Why minijinja rather than askama: the templates are plain Jinja files checked at
//! start (every template is parsed when the environment is built, and a unit test
//! renders each one), the message catalogue plugs in as one function `t(key)` reading
//! the page's `lang`, and adding a page needs no Rust type per template; askama would
//! check more at compile time but costs a struct per page and a proc-macro rebuild on
//! every template edit, which matters on a 2-core builder.

use super::i18n::{CATALOGUE, Lang, fill};
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind, State};

/// Every template, by name.
pub const SOURCES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    (
        "error_fragment.html",
        include_str!("templates/error_fragment.html"),
    ),
    ("case_row.html", include_str!("templates/case_row.html")),
    (
        "account_box.html",
        include_str!("templates/account_box.html"),
    ),
    ("station.html", include_str!("templates/station.html")),
    ("case.html", include_str!("templates/case.html")),
    ("account.html", include_str!("templates/account.html")),
    (
        "account_summary.html",
        include_str!("templates/account_summary.html"),
    ),
    ("accounts.html", include_str!("templates/accounts.html")),
    ("hall.html", include_str!("templates/hall.html")),
    ("policies.html", include_str!("templates/policies.html")),
    ("decision.html", include_str!("templates/decision.html")),
];

fn lang_of(state: &State) -> Lang {
    state
        .lookup("lang")
        .and_then(|v| v.as_str().and_then(Lang::parse))
        .unwrap_or(Lang::Zh)
}

/// `t("key", name=value, …)`: the message in the page's language.
fn t(state: &State, key: &str, kwargs: Kwargs) -> Result<String, Error> {
    let text = CATALOGUE.get(lang_of(state), key);
    let mut args = Vec::new();
    for name in kwargs.args() {
        let v: Value = kwargs.get(name)?;
        args.push((name, v.to_string()));
    }
    Ok(fill(&text, &args))
}

/// `fen|yuan`: integer fen as a yuan string with two places ("-12.34").
fn yuan(v: Value) -> Result<String, Error> {
    let fen = i64::try_from(v.clone()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("yuan: {v} is not integer fen"),
        )
    })?;
    Ok(crate::money::format_yuan(fen))
}

/// The environment with every template loaded and checked.
pub fn environment() -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    for (name, src) in SOURCES {
        env.add_template(name, src)?;
    }
    env.add_function("t", t);
    env.add_filter("yuan", yuan);
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_money_is_shown_in_yuan_with_two_places() {
        let env = environment().unwrap();
        let out = env
            .render_str(
                "{{ 1234|yuan }} {{ -5|yuan }} {{ t('nav.logout') }}",
                minijinja::context! { lang => "en" },
            )
            .unwrap();
        assert_eq!(out, "12.34 -0.05 Log out");
        let out = env
            .render_str(
                "{{ t('nav.logout') }}",
                minijinja::context! { lang => "zh" },
            )
            .unwrap();
        assert_eq!(out, "退出");
    }
}
