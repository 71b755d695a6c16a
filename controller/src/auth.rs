//! Who may use the API. MistServer's challenge flow for accounts, a bearer token for
//! scripts, and no trust for loopback unless the config asks for it
//! (`config.controller.trust_loopback`); MistServer trusts every local client.
//!
//! * Accounts: `account.USER.password` holds the MD5 (hex) of the password, as in
//!   MistServer's config. A client first sends `{"authorize":{"username":U,"password":""}}`
//!   and gets `{"status":"CHALL","challenge":C}`; it then sends with every request
//!   `password = md5hex(md5hex(PW) + C)`. The challenge is the MD5 of a secret drawn at the
//!   controller's start, the client's address and the hour, so requests need no server-side
//!   session; the previous hour's challenge is accepted too.
//! * With no account and no token configured the API answers `NOACC` and does nothing but
//!   create the first account (`{"authorize":{"new_username":U,"new_password":PW}}`), and
//!   only for a loopback client whose request passed [`crate::guard`] (a `POST` with the
//!   API's own `Host` and no foreign `Origin`): the operator's first step on a new server.
//!   `sluice --account USER:PASS` makes or updates an account at start instead.
//! * Tokens: `config.api_tokens` is a list of `{"name":N,"sha256":HEX}`; a request with
//!   `Authorization: Bearer TOKEN` whose SHA-256 is listed is authorized. `api_token_add`
//!   makes one and shows it once; only its hash is stored.

use md5::{Digest as _, Md5};
use serde_json::{json, Value};
use sha2::Sha256;

/// What the authorization stage decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Go on with the calls; `reply` (if any) is the `authorize` member of the answer.
    Allowed(Option<Value>),
    /// Refused: the HTTP status and the `authorize` member of the answer.
    Refused(u16, Value),
    /// The first account was made from this request: save the config, then go on.
    AccountMade(Value),
}

/// Lowercase hex of MD5.
pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

/// Lowercase hex of SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the kernel (`ipc::process::random_bytes`), as `2 * n` lowercase
/// hex digits: the API's challenge secret, its tokens, trigger session ids. Without the
/// kernel's randomness the controller stops (logging why) rather than hand out secrets an
/// attacker could guess.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if let Err(e) = ipc::process::random_bytes(&mut buf) {
        crate::logs::controller(&format!(
            "no random bytes from the kernel ({e}): stopping rather than making guessable secrets"
        ));
        std::process::exit(1);
    }
    hex(&buf)
}

/// The challenge for a client address in hour `hour` (Unix seconds / 3600).
pub fn challenge(secret: &str, peer: &str, hour: u64) -> String {
    md5_hex(format!("{secret}|{peer}|{hour}").as_bytes())
}

fn hour_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 3600)
        .unwrap_or(0)
}

/// An account as `--account` gives it ([`parse_account`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account<'a> {
    /// The user name.
    pub user: &'a str,
    /// The password, in clear.
    pub password: &'a str,
}

/// Parses `--account`'s `USER:PASS` (MistServer's `-a`): the user is what comes before the
/// first `:`, 1 to 100 characters without control characters; the password is the rest,
/// not empty. Errors: what is wrong, without the password.
pub fn parse_account(arg: &str) -> Result<Account<'_>, String> {
    let Some((user, pass)) = arg.split_once(':') else {
        return Err("--account takes USER:PASS".into());
    };
    if user.is_empty() || user.chars().count() > 100 || user.chars().any(|c| c.is_control()) {
        return Err(
            "--account: the user name is 1 to 100 characters, no control characters".into(),
        );
    }
    if pass.is_empty() {
        return Err(format!("--account: no password given for {user}"));
    }
    Ok(Account {
        user,
        password: pass,
    })
}

/// Makes account `user` with password `pass`, or sets the password of an existing one
/// (stored as MistServer does: `account.USER.password` = MD5 hex of the password). Returns
/// whether the config changed (false when the account already had this password).
pub fn set_account(cfg: &mut Value, user: &str, pass: &str) -> bool {
    let want = json!({"password": md5_hex(pass.as_bytes())});
    if cfg.get("account").and_then(|a| a.get(user)) == Some(&want) {
        return false;
    }
    if !cfg.get("account").is_some_and(|a| a.is_object()) {
        cfg["account"] = json!({});
    }
    cfg["account"][user] = want;
    true
}

fn has_accounts(cfg: &Value) -> bool {
    cfg.get("account")
        .and_then(|a| a.as_object())
        .is_some_and(|a| !a.is_empty())
}

fn tokens(cfg: &Value) -> Vec<(String, String)> {
    cfg.pointer("/config/api_tokens")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        t.get("name")?.as_str()?.to_string(),
                        t.get("sha256")?.as_str()?.to_ascii_lowercase(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Decides whether a request may run its calls. `authorize` is the request's `authorize`
/// member, `bearer` its `Authorization: Bearer` token, `peer` the client's address.
pub fn check(
    cfg: &mut Value,
    secret: &str,
    peer: std::net::IpAddr,
    authorize: Option<&Value>,
    bearer: Option<&str>,
) -> Verdict {
    let peer_s = peer.to_string();
    let chall = challenge(secret, &peer_s, hour_now());
    if let Some(t) = bearer {
        let h = sha256_hex(t.as_bytes());
        if tokens(cfg).iter().any(|(_, want)| *want == h) {
            return Verdict::Allowed(None);
        }
        return Verdict::Refused(
            401,
            json!({"status": "CHALL", "challenge": chall, "error": "unknown bearer token"}),
        );
    }
    let trusted = peer.is_loopback()
        && cfg.pointer("/config/controller/trust_loopback") == Some(&Value::Bool(true));
    if !has_accounts(cfg) && tokens(cfg).is_empty() {
        // First run: the only thing to do is make an account, from this machine.
        if let Some(a) = authorize {
            let user = a.get("new_username").and_then(|v| v.as_str()).unwrap_or("");
            let pass = a.get("new_password").and_then(|v| v.as_str()).unwrap_or("");
            if !user.is_empty() && !pass.is_empty() {
                if !peer.is_loopback() {
                    return Verdict::Refused(
                        403,
                        json!({"status": "NOACC", "error": "the first account is made from this machine (loopback) only"}),
                    );
                }
                set_account(cfg, user, pass);
                return Verdict::AccountMade(json!({"status": "ACC_MADE"}));
            }
        }
        if trusted {
            return Verdict::Allowed(None);
        }
        return Verdict::Refused(
            403,
            json!({"status": "NOACC", "error": "no account exists yet: make one with {\"authorize\":{\"new_username\":U,\"new_password\":P}} from this machine"}),
        );
    }
    if let Some(a) = authorize {
        let user = a.get("username").and_then(|v| v.as_str()).unwrap_or("");
        let given = a.get("password").and_then(|v| v.as_str()).unwrap_or("");
        let stored = cfg
            .get("account")
            .and_then(|acc| acc.get(user))
            .and_then(|u| u.get("password"))
            .and_then(|p| p.as_str())
            .unwrap_or("");
        if !stored.is_empty() && !given.is_empty() {
            let ok = [hour_now(), hour_now().saturating_sub(1)]
                .iter()
                .map(|h| md5_hex(format!("{stored}{}", challenge(secret, &peer_s, *h)).as_bytes()))
                .any(|want| want.eq_ignore_ascii_case(given));
            if ok {
                return Verdict::Allowed(Some(json!({"status": "OK"})));
            }
            return Verdict::Refused(
                401,
                json!({"status": "CHALL", "challenge": chall, "error": "wrong username or password"}),
            );
        }
    }
    if trusted {
        return Verdict::Allowed(None);
    }
    Verdict::Refused(401, json!({"status": "CHALL", "challenge": chall}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const LO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn the_challenge_flow_of_mistserver() {
        let mut cfg = json!({"account": {"admin": {"password": md5_hex(b"pw")}}});
        // Nothing given: a challenge, loopback or not.
        let Verdict::Refused(401, v) = check(&mut cfg, "s", LO, None, None) else {
            panic!()
        };
        let c = v["challenge"].as_str().unwrap().to_string();
        assert_eq!(c, challenge("s", "127.0.0.1", hour_now()));
        // md5(md5(pw) + challenge) logs in.
        let resp = md5_hex(format!("{}{c}", md5_hex(b"pw")).as_bytes());
        let a = json!({"username": "admin", "password": resp});
        assert_eq!(
            check(&mut cfg, "s", LO, Some(&a), None),
            Verdict::Allowed(Some(json!({"status": "OK"})))
        );
        // The same answer from another address is wrong (its challenge differs).
        let other: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(matches!(
            check(&mut cfg, "s", other, Some(&a), None),
            Verdict::Refused(401, _)
        ));
        let bad = json!({"username": "admin", "password": md5_hex(b"nope")});
        assert!(matches!(
            check(&mut cfg, "s", LO, Some(&bad), None),
            Verdict::Refused(401, _)
        ));
    }

    #[test]
    fn no_account_means_setup_only_and_loopback_is_not_trusted_by_default() {
        let mut cfg = json!({"config": {}});
        assert!(matches!(
            check(&mut cfg, "s", LO, None, None),
            Verdict::Refused(403, _)
        ));
        let make = json!({"new_username": "admin", "new_password": "pw"});
        let far: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(matches!(
            check(&mut cfg, "s", far, Some(&make), None),
            Verdict::Refused(403, _)
        ));
        assert_eq!(
            check(&mut cfg, "s", LO, Some(&make), None),
            Verdict::AccountMade(json!({"status": "ACC_MADE"}))
        );
        assert_eq!(cfg["account"]["admin"]["password"], md5_hex(b"pw"));
        // Trusting loopback is a setting.
        let mut cfg = json!({"config": {"controller": {"trust_loopback": true}}});
        assert_eq!(check(&mut cfg, "s", LO, None, None), Verdict::Allowed(None));
        assert!(matches!(
            check(&mut cfg, "s", far, None, None),
            Verdict::Refused(..)
        ));
    }

    #[test]
    fn accounts_from_the_command_line() {
        assert_eq!(
            parse_account("admin:pw:x"),
            Ok(Account {
                user: "admin",
                password: "pw:x"
            })
        );
        assert!(parse_account("admin").is_err());
        assert!(parse_account(":pw").is_err());
        let e = parse_account("admin:").unwrap_err();
        assert!(e.contains("admin"), "{e}");
        assert!(parse_account("ad\nmin:pw").is_err());
        assert!(!parse_account("admin\u{1}:s3cret")
            .unwrap_err()
            .contains("s3cret"));
        let mut cfg = json!({"config": {}});
        assert!(set_account(&mut cfg, "admin", "pw"));
        assert!(!set_account(&mut cfg, "admin", "pw"));
        assert!(set_account(&mut cfg, "admin", "new"));
        assert_eq!(cfg["account"]["admin"]["password"], md5_hex(b"new"));
        // The account logs in with MistServer's challenge.
        let c = challenge("s", "127.0.0.1", hour_now());
        let resp = md5_hex(format!("{}{c}", md5_hex(b"new")).as_bytes());
        let a = json!({"username": "admin", "password": resp});
        assert_eq!(
            check(&mut cfg, "s", LO, Some(&a), None),
            Verdict::Allowed(Some(json!({"status": "OK"})))
        );
    }

    #[test]
    fn bearer_tokens_are_checked_by_their_hash() {
        let mut cfg =
            json!({"config": {"api_tokens": [{"name": "ci", "sha256": sha256_hex(b"tok")}]}});
        assert_eq!(
            check(&mut cfg, "s", LO, None, Some("tok")),
            Verdict::Allowed(None)
        );
        assert!(matches!(
            check(&mut cfg, "s", LO, None, Some("other")),
            Verdict::Refused(401, _)
        ));
        assert!(matches!(
            check(&mut cfg, "s", LO, None, None),
            Verdict::Refused(401, _)
        ));
    }
}
