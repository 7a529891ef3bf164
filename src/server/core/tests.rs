//! The core, handed each kind of event without a socket or a disk: what it answers, what it
//! writes to the journals, and what it announces and forwards once they have committed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::decide::ImportError;
use super::*;
use crate::clock::unix_now;
use crate::server::changes::{Change, Committed};
use crate::store::Recovery;
use crate::wire::protocol::{Ban, Bantime, Lift, Name, Report, Verdict};

fn config(extra: &str) -> ServerConfig {
    toml::from_str(&format!("report-port = 1\npublish-port = 2\n{extra}")).unwrap()
}

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

/// A core as a server starts it on empty journals, with the hosts web1 to web3 and the
/// peer server s2 authorized.
fn core(extra: &str) -> Core {
    let config = config(extra);
    let (groups, grouped) = ledger::groups_of(&config);
    let empty = || (Recovery::default(), Recovery::default());
    let ledgers = groups.into_iter().map(|group| {
        let (bans, waiting) = empty();
        Ledger::new(&config, group, grouped, bans, waiting)
    });
    let auth = Authorizer::default();
    let names = [(1, "web1"), (2, "web2"), (3, "web3"), (9, "s2")];
    auth.replace(HashMap::from(
        names.map(|(n, name)| (key(n), name.to_string())),
    ));
    Core::new(ledgers.collect(), &config, auth)
}

fn host(n: u8) -> Peer {
    Peer {
        name: format!("web{n}"),
        key: key(n),
        address: format!("tcp://192.0.2.{n}:40000"),
    }
}

/// The peer server s2, as its requests name it.
fn peer_server() -> Peer {
    Peer {
        name: "s2".into(),
        key: key(9),
        address: "tcp://192.0.2.9:40000".into(),
    }
}

fn report(ip: &str) -> Report {
    report_in(ip, "sshd")
}

fn report_in(ip: &str, jail: &str) -> Report {
    Report {
        ip: ip.parse().unwrap(),
        prog: Name::parse("prog", "fail2ban").unwrap(),
        jail: Name::parse("jail", jail).unwrap(),
        bantime: Bantime::Seconds(600),
    }
}

/// What the shell does with changes: hands the records to the journals, then takes what
/// may be announced and forwarded. Each record is read back as "KIND group IP".
fn carry_out(changes: Changes) -> (Vec<String>, Committed) {
    let mut written = Vec::new();
    let committed = changes
        .commit(|records| -> Result<(), ()> {
            written = records.iter().map(record).collect();
            Ok(())
        })
        .unwrap();
    (written, committed)
}

fn record((g, written): &(usize, Written)) -> String {
    match written {
        Written::Ban(entry) => format!("ban {g} {}", entry.ban.ip),
        Written::Lift(lift) => format!("lift {g} {}", lift.ip),
        Written::Waiting(ip, Some(_)) => format!("waiting {g} {ip}"),
        Written::Waiting(ip, None) => format!("done {g} {ip}"),
    }
}

/// The announcements, as "ban group IP" or "unban group IP".
fn announced(committed: &Committed) -> Vec<String> {
    let line = |(g, change): &(usize, Change)| match change {
        Change::Ban(ban) => format!("ban {g} {}", ban.ip),
        Change::Unban(ban, _) => format!("unban {g} {}", ban.ip),
    };
    committed.announced().iter().map(line).collect()
}

/// Runs one event on `core` and carries out its changes.
fn event<T>(
    core: &mut Core,
    run: impl FnOnce(&mut Core, &mut Changes) -> T,
) -> (T, Vec<String>, Committed) {
    let mut changes = Changes::default();
    let answer = run(core, &mut changes);
    let (written, committed) = carry_out(changes);
    (answer, written, committed)
}

/// Each report from its host, one event each.
fn reported<const N: usize>(core: &mut Core, reports: [(&Report, u8); N]) {
    for (r, n) in reports {
        event(core, |c, ch| c.report(r, &host(n), ch));
    }
}

/// The bans a core holds now, as text.
fn bans(core: &Core) -> Vec<String> {
    let views = core.bans(unix_now()).into_iter();
    let mut bans: Vec<String> = views.map(|b| format!("{} by {}", b.ip, b.origin)).collect();
    bans.sort();
    bans
}

/// What a peer server hears of `committed`, as `merge_from_peer` takes it.
fn heard(committed: &Committed) -> (Vec<Ban>, Vec<Lift>) {
    let (mut bans, mut lifts) = (Vec::new(), Vec::new());
    for (_, change) in committed.announced() {
        match change {
            Change::Ban(ban) => bans.push(ban.clone()),
            Change::Unban(ban, at) => lifts.push(Lift {
                ip: ban.ip,
                at: *at,
                until: ban.expires,
            }),
        }
    }
    (bans, lifts)
}

#[test]
fn a_report_is_journaled_before_it_is_announced_and_its_duplicate_only_journaled() {
    let mut core = core("");
    let r = report("203.0.113.7");
    let (verdict, written, committed) = event(&mut core, |c, ch| c.report(&r, &host(1), ch));
    assert_eq!(verdict, Verdict::Accepted);
    assert_eq!(written, ["ban 0 203.0.113.7"]);
    assert_eq!(announced(&committed), ["ban 0 203.0.113.7"]);
    assert!(committed.forwarded().is_empty());
    // A second host's word joins the audit trail, and nobody needs to hear of it.
    let (verdict, written, committed) = event(&mut core, |c, ch| c.report(&r, &host(2), ch));
    assert_eq!(verdict, Verdict::Duplicate);
    assert_eq!(written, ["ban 0 203.0.113.7"]);
    assert!(announced(&committed).is_empty());
    // The same host again changes nothing at all.
    let (verdict, written, _) = event(&mut core, |c, ch| c.report(&r, &host(2), ch));
    assert_eq!((verdict, written.len()), (Verdict::Duplicate, 0));
}

#[test]
fn a_report_that_waits_is_journaled_and_forwarded_and_the_confirming_one_bans() {
    let mut core = core("min-reporters = 2");
    let r = report("203.0.113.7");
    let (verdict, written, committed) = event(&mut core, |c, ch| c.report(&r, &host(1), ch));
    assert!(matches!(verdict, Verdict::Pending(_)), "{verdict:?}");
    assert_eq!(written, ["waiting 0 203.0.113.7"]);
    assert!(announced(&committed).is_empty());
    let forwarded = committed.forwarded();
    assert_eq!(forwarded.len(), 1);
    assert!(forwarded[0].1[0].contains("203.0.113.7"), "{forwarded:?}");
    let (verdict, written, committed) = event(&mut core, |c, ch| c.report(&r, &host(2), ch));
    assert_eq!(verdict, Verdict::Accepted);
    assert_eq!(written, ["ban 0 203.0.113.7", "done 0 203.0.113.7"]);
    assert_eq!(announced(&committed), ["ban 0 203.0.113.7"]);
}

#[test]
fn a_protected_network_changes_nothing() {
    let mut core = core("protected = [\"198.51.100.0/24\"]");
    let r = report("198.51.100.5");
    let (verdict, written, committed) = event(&mut core, |c, ch| c.report(&r, &host(1), ch));
    assert!(matches!(verdict, Verdict::Refused(_)), "{verdict:?}");
    assert!(written.is_empty() && announced(&committed).is_empty());
    assert!(bans(&core).is_empty());
}

#[test]
fn a_forwarded_report_counts_toward_confirmation_only_from_a_peer() {
    let (mut here, mut there) = (core("min-reporters = 2"), core("min-reporters = 2"));
    let r = report("203.0.113.7");
    let (_, _, committed) = event(&mut there, |c, ch| c.report(&r, &host(2), ch));
    let line = committed.forwarded()[0].1[0].clone();
    let s2 = peer_server();
    // web3 is a host, not a peer server: what it forwards is refused.
    let from_host = (&host(3), None);
    let (verdict, written, _) = event(&mut here, |c, ch| c.forwarded(&line, None, from_host, ch));
    assert!(matches!(verdict, Verdict::Refused(_)), "{verdict:?}");
    assert!(written.is_empty());
    let (verdict, written, committed) = event(&mut here, |c, ch| {
        c.forwarded(&line, None, (&s2, Some("s2")), ch)
    });
    assert!(matches!(verdict, Verdict::Pending(_)), "{verdict:?}");
    assert_eq!(written, ["waiting 0 203.0.113.7"]);
    assert!(committed.forwarded().is_empty(), "never forwarded further");
    // web1's report here is the second host's: banned.
    let (verdict, _, committed) = event(&mut here, |c, ch| c.report(&r, &host(1), ch));
    assert_eq!(verdict, Verdict::Accepted);
    assert_eq!(announced(&committed), ["ban 0 203.0.113.7"]);
}

#[test]
fn a_held_report_is_banned_as_its_allowance_refills() {
    // One report at once, then one a second.
    let mut core = core("report-burst = 1\nreport-rate = 60");
    let (first, second) = (report("203.0.113.7"), report("203.0.113.8"));
    let (verdict, _, _) = event(&mut core, |c, ch| c.report(&first, &host(1), ch));
    assert_eq!(verdict, Verdict::Accepted);
    let (verdict, written, _) = event(&mut core, |c, ch| c.report(&second, &host(1), ch));
    assert!(matches!(verdict, Verdict::Pending(_)), "{verdict:?}");
    assert_eq!(written, ["waiting 0 203.0.113.8"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let released = loop {
        let (_, written, committed) = event(&mut core, Core::release_held);
        if !written.is_empty() || Instant::now() > deadline {
            break (written, announced(&committed));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(released.0, ["ban 0 203.0.113.8", "done 0 203.0.113.8"]);
    assert_eq!(released.1, ["ban 0 203.0.113.8"]);
}

#[test]
fn a_reload_that_lowers_min_reporters_bans_what_waited() {
    let mut core = core("min-reporters = 3");
    let r = report("203.0.113.7");
    reported(&mut core, [(&r, 1), (&r, 2)]);
    let (_, written, _) = event(&mut core, Core::confirm_waiting);
    assert!(written.is_empty(), "still two of three");
    core.adopt(&config("min-reporters = 2"));
    let (_, written, committed) = event(&mut core, Core::confirm_waiting);
    assert_eq!(written, ["ban 0 203.0.113.7", "done 0 203.0.113.7"]);
    assert_eq!(announced(&committed), ["ban 0 203.0.113.7"]);
}

#[test]
fn an_import_bans_in_its_origins_name_which_no_hosts_key_may_have() {
    let mut core = core("protected = [\"198.51.100.0/24\"]");
    let list = [report("203.0.113.7"), report("198.51.100.5")];
    let (refused, written, _) = event(&mut core, |c, ch| c.import("web1", &list, ch));
    let web1 = Name::parse("origin", "web1").unwrap();
    assert_eq!(refused.unwrap_err(), ImportError::KeyName(web1));
    assert!(written.is_empty());
    let (summary, written, committed) = event(&mut core, |c, ch| c.import("spamhaus", &list, ch));
    let summary = summary.unwrap();
    assert_eq!((summary.accepted, summary.refused["protected"]), (1, 1));
    assert_eq!(written, ["ban 0 203.0.113.7"]);
    assert_eq!(announced(&committed), ["ban 0 203.0.113.7"]);
    assert_eq!(bans(&core), ["203.0.113.7 by spamhaus"]);
}

/// A feed's `group` puts its bans in that group, whatever the rules pick.
#[test]
fn an_import_into_a_named_group_goes_there() {
    let mut core = core("[[groups]]\nname = \"web\"\njails = [\"nginx-*\"]\n");
    let list = [report("203.0.113.7")];
    let (_, written, _) = event(&mut core, |c, ch| {
        c.import_in("feed:drop", &list, Some("web"), ch)
    });
    assert_eq!(written, ["ban 1 203.0.113.7"]);
    let list = [report("203.0.113.8")];
    let (_, written, _) = event(&mut core, |c, ch| c.import_in("feed:drop", &list, None, ch));
    assert_eq!(written, ["ban 0 203.0.113.8"]);
}

#[test]
fn what_a_peer_publishes_is_merged_once_and_never_announced_again() {
    let (mut one, mut two) = (core(""), core(""));
    let r = report("203.0.113.7");
    let (_, _, committed) = event(&mut one, |c, ch| c.report(&r, &host(1), ch));
    let (bans_heard, _) = heard(&committed);
    let (changed, written, committed) = event(&mut two, |c, ch| {
        c.merge_from_peer("s1", 0, (&bans_heard, &[]), ch)
    });
    assert_eq!(changed, 1);
    assert_eq!(written, ["ban 0 203.0.113.7"]);
    assert_eq!(announced(&committed), ["ban 0 203.0.113.7"]);
    // Heard again, or heard back from the other: nothing changes, so nothing loops.
    let (again, _, _) = event(&mut two, |c, ch| {
        c.merge_from_peer("s1", 0, (&bans_heard, &[]), ch)
    });
    let (back, _, _) = event(&mut one, |c, ch| {
        c.merge_from_peer("s2", 0, (&bans_heard, &[]), ch)
    });
    assert_eq!((again, back), (0, 0));
}

#[test]
fn a_peer_is_held_to_the_rules_of_a_report() {
    let mut core = core("protected = [\"198.51.100.0/24\"]");
    let now = unix_now();
    let protected = Ban::sample("198.51.100.5", Some(600), Some(now + 600));
    // Dated an hour ahead of this host's clock.
    let ahead = Ban::sample("203.0.113.7", Some(600), Some(now + 4200));
    let lift_ahead = Lift {
        ip: "203.0.113.8".parse().unwrap(),
        at: now + 3600,
        until: None,
    };
    let said = ([protected, ahead], [lift_ahead]);
    let (changed, written, _) = event(&mut core, |c, ch| {
        c.merge_from_peer("s2", 0, (&said.0, &said.1), ch)
    });
    assert_eq!((changed, written.len()), (0, 0));
    assert!(bans(&core).is_empty());
}

/// A peer's ban of prog import is a list's: held to import-min-prefix, not min-prefix, and
/// kept off private space; the same network under another prog is held to min-prefix.
#[test]
fn a_peers_list_ban_is_held_to_the_rules_of_a_list() {
    let mut core = core("");
    let now = unix_now();
    let list = |ip: &str| Ban {
        prog: Name::parse("prog", "import").unwrap(),
        ..Ban::sample(ip, Some(600), Some(now + 600))
    };
    let said = [
        list("45.128.0.0/10"),
        list("10.0.0.0/8"),
        list("2.0.0.0/7"),
        Ban::sample("46.0.0.0/10", Some(600), Some(now + 600)),
    ];
    event(&mut core, |c, ch| {
        c.merge_from_peer("s2", 0, (&said, &[]), ch)
    });
    assert_eq!(bans(&core), ["45.128.0.0/10 by web1"]);
}

#[test]
fn a_peers_unban_lifts_unless_enough_hosts_reported_here_after_it() {
    let mut core = core("");
    let now = unix_now();
    let mut ban = Ban::sample("203.0.113.7", Some(3600), Some(now - 200 + 3600));
    ban.origin = Name::parse("origin", "web2").unwrap();
    event(&mut core, |c, ch| {
        c.merge_from_peer("s2", 0, (&[ban.clone()], &[]), ch)
    });
    // web1 reports it here, after the peer's unban below was made.
    let r = report("203.0.113.7");
    let (verdict, _, _) = event(&mut core, |c, ch| c.report(&r, &host(1), ch));
    assert_eq!(verdict, Verdict::Duplicate);
    let lift = Lift {
        ip: ban.ip,
        at: now - 100,
        until: ban.expires,
    };
    let (_, written, committed) = event(&mut core, |c, ch| {
        c.merge_from_peer("s2", 0, (&[], &[lift]), ch)
    });
    assert_eq!(written, ["ban 0 203.0.113.7", "lift 0 203.0.113.7"]);
    assert_eq!(
        announced(&committed),
        ["ban 0 203.0.113.7"],
        "kept, and said so"
    );
    // Without web1's report here, the same unban lifts it.
    let mut other = self::core("");
    event(&mut other, |c, ch| {
        c.merge_from_peer("s2", 0, (&[ban.clone()], &[]), ch)
    });
    let (_, written, committed) = event(&mut other, |c, ch| {
        c.merge_from_peer("s2", 0, (&[], &[lift]), ch)
    });
    assert_eq!(written, ["lift 0 203.0.113.7"]);
    assert_eq!(announced(&committed), ["unban 0 203.0.113.7"]);
    assert!(bans(&other).is_empty());
}

/// Servers in a line, one - two - three: `two` has lifted a ban that `three` still holds
/// and never heard the unban of, since `one` made it and `two` is its only way there.
#[test]
fn a_stale_ban_is_answered_with_the_unban_that_lifts_it() {
    let (mut one, mut two, mut three) = (core(""), core(""), core(""));
    let r = report("203.0.113.7");
    let (_, _, committed) = event(&mut one, |c, ch| c.report(&r, &host(1), ch));
    let (bans_heard, _) = heard(&committed);
    for server in [&mut two, &mut three] {
        event(server, |c, ch| {
            c.merge_from_peer("s1", 0, (&bans_heard, &[]), ch)
        });
    }
    let ip = r.ip;
    let (_, _, committed) = event(&mut one, |c, ch| c.unban(&ip, ch));
    let (_, lifts) = heard(&committed);
    event(&mut two, |c, ch| {
        c.merge_from_peer("s1", 0, (&[], &lifts), ch)
    });
    // `three` missed `two`'s unban (a link down), and pages its table to `two` later.
    let (changed, written, committed) = event(&mut two, |c, ch| {
        c.merge_from_peer("s3", 0, (&bans_heard, &[]), ch)
    });
    assert_eq!(changed, 1);
    assert_eq!(written, ["lift 0 203.0.113.7"]);
    assert_eq!(announced(&committed), ["unban 0 203.0.113.7"]);
    let (_, answer) = heard(&committed);
    event(&mut three, |c, ch| {
        c.merge_from_peer("s2", 0, (&[], &answer), ch)
    });
    assert!(bans(&three).is_empty());
    // The answer heard back changes nothing: nothing loops.
    let (changed, ..) = event(&mut two, |c, ch| {
        c.merge_from_peer("s3", 0, (&[], &answer), ch)
    });
    assert_eq!(changed, 0);
}

#[test]
fn an_unban_lifts_the_ban_and_drops_what_waits() {
    let mut core = core("min-reporters = 2");
    let (banned, waiting) = (report("203.0.113.7"), report("203.0.113.8"));
    reported(&mut core, [(&banned, 1), (&banned, 2), (&waiting, 1)]);
    let ip = banned.ip;
    let (answer, written, committed) = event(&mut core, |c, ch| c.unban(&ip, ch));
    assert_eq!(
        answer.reply.unwrap(),
        "unbanned 203.0.113.7; every client runs its unban command"
    );
    // The host whose report banned it.
    assert_eq!(
        answer.log.unwrap(),
        "unbanned 203.0.113.7 (reported by web2)"
    );
    assert_eq!(written, ["lift 0 203.0.113.7"]);
    assert_eq!(announced(&committed), ["unban 0 203.0.113.7"]);
    let (answer, written, _) = event(&mut core, |c, ch| c.unban(&ip, ch));
    assert_eq!(answer.reply.unwrap_err(), "203.0.113.7 is not banned");
    assert!(written.is_empty());
    let ip = waiting.ip;
    let (answer, written, committed) = event(&mut core, |c, ch| c.unban(&ip, ch));
    assert_eq!(
        answer.reply.unwrap(),
        "203.0.113.8 was not banned; dropped the reports waiting for it here"
    );
    assert_eq!(written, ["done 0 203.0.113.8"]);
    assert!(announced(&committed).is_empty());
}

#[test]
fn unban_origin_lifts_only_what_that_host_alone_reported() {
    let mut core = core("");
    let (alone, shared) = (report("203.0.113.7"), report("203.0.113.8"));
    reported(&mut core, [(&alone, 1), (&shared, 1), (&shared, 2)]);
    let (answer, written, committed) = event(&mut core, |c, ch| c.unban_origin("web1", ch));
    assert_eq!(
        answer.reply.unwrap(),
        "unbanned 1 bans that only web1 reported; kept 1 that other hosts reported too; \
         dropped 0 of its waiting reports"
    );
    assert_eq!(written, ["lift 0 203.0.113.7"]);
    assert_eq!(announced(&committed), ["unban 0 203.0.113.7"]);
    assert_eq!(bans(&core), ["203.0.113.8 by web1"]);
}

#[test]
fn a_reload_lifts_what_is_now_protected() {
    let mut core = core("");
    let r = report("198.51.100.5");
    event(&mut core, |c, ch| c.report(&r, &host(1), ch));
    core.adopt(&config("protected = [\"198.51.100.0/24\"]"));
    let (_, written, committed) = event(&mut core, Core::lift_never_banned);
    assert_eq!(written, ["lift 0 198.51.100.5"]);
    assert_eq!(announced(&committed), ["unban 0 198.51.100.5"]);
    assert_eq!(core.intake.counters.unbanned, 1);
}

#[test]
fn a_report_whose_window_passed_is_dropped_and_journaled() {
    let mut core = core("min-reporters = 2\nconfirm-window = \"10m\"");
    let r = report("203.0.113.7");
    event(&mut core, |c, ch| c.report(&r, &host(1), ch));
    let (_, written, _) = event(&mut core, |c, ch| c.purge(unix_now(), ch));
    assert!(written.is_empty(), "still within its window");
    let later = unix_now() + 601;
    let (_, written, committed) = event(&mut core, |c, ch| c.purge(later, ch));
    assert_eq!(written, ["done 0 203.0.113.7"]);
    assert!(announced(&committed).is_empty());
    assert!(core.pending().is_empty());
}

#[test]
fn at_start_what_a_former_peer_forwarded_is_dropped_and_the_rest_forwarded_again() {
    let (mut here, mut there) = (core("min-reporters = 3"), core("min-reporters = 3"));
    let (own, forwarded) = (report("203.0.113.7"), report("203.0.113.8"));
    event(&mut here, |c, ch| c.report(&own, &host(1), ch));
    let (_, _, committed) = event(&mut there, |c, ch| c.report(&forwarded, &host(2), ch));
    let line = committed.forwarded()[0].1[0].clone();
    let s2 = peer_server();
    event(&mut here, |c, ch| {
        c.forwarded(&line, None, (&s2, Some("s2")), ch)
    });
    // s2 is no longer among the peers when this server starts again.
    let (_, written, committed) = event(&mut here, |c, ch| c.start(&[], ch));
    assert_eq!(written, ["done 0 203.0.113.8"]);
    let forwarded = committed.forwarded();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].1.len(), 1, "{forwarded:?}");
    assert!(forwarded[0].1[0].contains("203.0.113.7"), "{forwarded:?}");
}

#[test]
fn two_servers_that_hear_each_other_in_any_order_hold_the_same_bans() {
    let (mut one, mut two) = (core(""), core(""));
    let (a, b) = (report("203.0.113.7"), report("203.0.113.8"));
    let (_, _, from_one) = event(&mut one, |c, ch| c.report(&a, &host(1), ch));
    let (_, _, from_two) = event(&mut two, |c, ch| c.report(&b, &host(2), ch));
    let ip = b.ip;
    let (_, _, unban_two) = event(&mut two, |c, ch| c.unban(&ip, ch));
    // One hears two's unban before two's ban, which it then must not take.
    for said in [&unban_two, &from_two] {
        let (bans, lifts) = heard(said);
        event(&mut one, |c, ch| {
            c.merge_from_peer("s2", 0, (&bans, &lifts), ch)
        });
    }
    let (bans_heard, lifts) = heard(&from_one);
    event(&mut two, |c, ch| {
        c.merge_from_peer("s1", 0, (&bans_heard, &lifts), ch)
    });
    assert_eq!(bans(&one), ["203.0.113.7 by web1"]);
    assert_eq!(bans(&one), bans(&two));
}

#[test]
fn a_report_goes_to_the_group_its_rules_name_and_an_unknown_group_is_refused() {
    let mut core = core("[[groups]]\nname = \"web\"\njails = [\"nginx-*\"]\n");
    let (web, other) = (
        report_in("203.0.113.7", "nginx-botsearch"),
        report("203.0.113.8"),
    );
    let (_, written, _) = event(&mut core, |c, ch| c.report(&web, &host(1), ch));
    assert_eq!(written, ["ban 1 203.0.113.7"]);
    let (_, written, _) = event(&mut core, |c, ch| c.report(&other, &host(1), ch));
    assert_eq!(written, ["ban 0 203.0.113.8"]);
    let web = Group::parse("web").unwrap();
    assert_eq!(core.ledger_named(Some(&web)), Ok(1));
    let mail = Group::parse("mail").unwrap();
    let refused = core.ledger_named(Some(&mail)).unwrap_err();
    assert_eq!(refused, GroupError::NoSuchGroup(mail));
    assert_eq!(refused.to_string(), "this server has no group mail");
}
