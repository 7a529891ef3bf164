//! Each format from a file written to its public description.

use super::*;

fn options(format: Format) -> Options {
    Options::import(format, Bantime::Seconds(3600), 1)
}

/// Each report as `prog jail ip bantime`.
fn fields(list: &List) -> Vec<String> {
    list.reports.iter().map(|r| r.fields().join(" ")).collect()
}

/// Each bad line as `PLACE: REASON`.
fn bad(list: &List) -> Vec<String> {
    list.bad
        .iter()
        .map(|b| format!("{}: {}", b.at, b.reason))
        .collect()
}

#[test]
fn plain_lines_and_csv_lines_with_their_defaults() {
    let text = "address,bantime,jail\n203.0.113.7\n# a comment\n\n198.51.100.0/24,600\n\
                2001:db8::1,-1,web # why\n192.0.2.1,,\n";
    let list = parse(text, &options(Format::Auto));
    assert_eq!(
        fields(&list),
        [
            "import blocklist 203.0.113.7 3600",
            "import blocklist 198.51.100.0/24 600",
            "import web 2001:db8::1 -1",
            "import blocklist 192.0.2.1 3600",
        ]
    );
    assert!(list.bad.is_empty());
}

#[test]
fn every_bad_line_is_named() {
    let list = parse(
        "203.0.113.7\nnot-an-ip\n1.2.3.4,x\n1.2.3.4,1,j,k\n",
        &options(Format::Plain),
    );
    let lines: Vec<Place> = list.bad.iter().map(|b| b.at).collect();
    assert_eq!(lines, [Place::Line(2), Place::Line(3), Place::Line(4)]);
    assert!(
        matches!(list.bad[0].reason, EntryError::Address(_)),
        "{:?}",
        list.bad
    );
    assert!(
        matches!(list.bad[1].reason, EntryError::Bantime(_)),
        "{:?}",
        list.bad
    );
    assert_eq!(
        bad(&list)[2],
        "line 4: 4 fields, where a line has at most 3"
    );
    assert_eq!(fields(&list), ["import blocklist 203.0.113.7 3600"]);
    let list = parse("1.2.3.4,1,-j\n", &options(Format::Plain));
    assert!(
        matches!(list.bad[0].reason, EntryError::Jail(_)),
        "{:?}",
        list.bad
    );
}

/// Spamhaus DROP as published: `;` comments, and `; SBL` after every network; CRLF too.
#[test]
fn spamhaus_drop_text() {
    let text = "; Spamhaus DROP List 2026/12/07 - (c) 2026 The Spamhaus Project SLU\r\n\
                ; https://www.spamhaus.org/drop/drop.txt\r\n\
                ; Last-Modified: Mon, 07 Dec 2026 05:17:00 GMT\r\n\
                1.10.16.0/20 ; SBL256894\r\n\
                1.19.0.0/16 ; SBL434604\r\n\
                2a06:e480::/29 ; SBL301771\r\n";
    assert_eq!(detect(text), Format::Plain);
    let list = parse(text, &options(Format::Auto));
    assert_eq!(
        fields(&list),
        [
            "import blocklist 1.10.16.0/20 3600",
            "import blocklist 1.19.0.0/16 3600",
            "import blocklist 2a06:e480::/29 3600",
        ]
    );
}

/// Spamhaus's JSON lists: an object per line, then the metadata line with the count.
#[test]
fn spamhaus_json_and_a_truncated_copy() {
    let text = "{\"cidr\":\"1.10.16.0/20\",\"sblid\":\"SBL256894\",\"rir\":\"apnic\"}\n\
                {\"cidr\":\"1.19.0.0/16\",\"sblid\":\"SBL434604\",\"rir\":\"apnic\"}\n\
                {\"type\":\"metadata\",\"timestamp\":1796620000,\"size\":9001,\"records\":2,\
                \"copyright\":\"(c) 2026 The Spamhaus Project SLU\",\"terms\":\"https://www.spamhaus.org/drop/terms/\"}\n";
    assert_eq!(detect(text), Format::SpamhausJson);
    let list = parse(text, &options(Format::Auto));
    assert_eq!(
        fields(&list),
        [
            "import blocklist 1.10.16.0/20 3600",
            "import blocklist 1.19.0.0/16 3600"
        ]
    );
    assert!(list.bad.is_empty(), "{:?}", list.bad);

    // The same list cut short after its first line, metadata kept (a proxy's truncation
    // that kept the tail), and a line that is not JSON.
    let cut: String = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let list = parse(&format!("{cut}not json\n"), &options(Format::SpamhausJson));
    assert_eq!(list.bad.len(), 2, "{:?}", list.bad);
    assert!(matches!(list.bad[0].reason, EntryError::Json(_)));
    assert_eq!(
        list.bad[1].reason,
        EntryError::Truncated { said: 2, found: 1 }
    );
    assert_eq!(
        bad(&list)[1],
        "line 3: the metadata line counts 2 records, and the list has 1: truncated?"
    );
}

/// FireHOL's netsets and ipsets: a `#` header, then a network or an address per line. Its
/// level1 list names bogons too: those are refused by the server, by reason, not here.
#[test]
fn firehol_netsets_and_ipsets() {
    let text =
        "#\n# firehol_level1\n#\n# ipv4 hash:net ipset\n#\n# Entries         : 4 subnets\n#\n\
                0.0.0.0/8\n1.10.16.0/20\n10.0.0.0/8\n127.0.0.0/8\n";
    let list = parse(text, &options(Format::Auto));
    assert_eq!(list.reports.len(), 4);
    assert_eq!(fields(&list)[2], "import blocklist 10.0.0.0/8 3600");
    let ipset = "# blocklist_de\n#\n1.2.3.4\n5.6.7.8\n";
    assert_eq!(fields(&parse(ipset, &options(Format::Plain))).len(), 2);
}

/// ipsum: `address<TAB>count`, the count of lists naming it; `--min-count` keeps those named
/// by enough.
#[test]
fn ipsum_with_a_min_count() {
    let text = "# IPsum Threat Intelligence Feed\n# (https://github.com/stamparm/ipsum)\n#\n\
                # Last update: Mon, 07 Dec 2026 03:00:31 +0100\n#\n# IP\tnumber of (black)lists\n#\n\
                185.224.128.17\t10\n45.148.10.81\t3\n80.94.95.115\t1\n";
    assert_eq!(detect(text), Format::Ipsum);
    let list = parse(
        text,
        &Options {
            min_count: 3,
            ..options(Format::Auto)
        },
    );
    assert_eq!(
        fields(&list),
        [
            "import blocklist 185.224.128.17 3600",
            "import blocklist 45.148.10.81 3600"
        ]
    );
    assert_eq!(list.skipped.get("named by fewer than 3 lists"), Some(&1));
    let list = parse("1.2.3.4\tmany\n1.2.3.5 2 x\n", &options(Format::Ipsum));
    assert_eq!(
        bad(&list),
        [
            "line 1: count \"many\" is not a whole number",
            "line 2: 3 fields, where a line has at most 2"
        ]
    );
}

/// `cscli decisions list -o json`: alerts with their decisions; what is no IP or range ban
/// is skipped and counted, the scenario is the jail, the duration the bantime.
#[test]
fn crowdsec_list_output() {
    let text = r#"[
  {"id": 7, "capacity": 5, "scenario": "crowdsecurity/ssh-bf", "source": {"ip": "203.0.113.9", "scope": "Ip", "value": "203.0.113.9"},
   "decisions": [
     {"duration": "3h59m58.51s", "id": 11, "origin": "crowdsec", "scenario": "crowdsecurity/ssh-bf", "scope": "Ip", "type": "ban", "value": "203.0.113.9", "simulated": false},
     {"duration": "1h", "id": 12, "origin": "crowdsec", "scenario": "crowdsecurity/http-probing", "scope": "Ip", "type": "captcha", "value": "203.0.113.10"}
   ]},
  {"id": 8, "scenario": "manual 'ban' from 'localhost'", "decisions": [
     {"duration": "23h", "id": 13, "origin": "cscli", "scenario": "manual 'ban' from 'localhost'", "scope": "Range", "type": "ban", "value": "198.51.100.0/24"},
     {"duration": "4h", "id": 14, "origin": "cscli", "scenario": "x", "scope": "Country", "type": "ban", "value": "XX"},
     {"duration": "-1m2s", "id": 15, "origin": "cscli", "scenario": "x", "scope": "Ip", "type": "ban", "value": "192.0.2.1"}
   ]},
  {"id": 9, "decisions": null}
]"#;
    assert_eq!(detect(text), Format::Crowdsec);
    let list = parse(text, &options(Format::Auto));
    assert_eq!(
        fields(&list),
        [
            "import crowdsecurity.ssh-bf 203.0.113.9 14399",
            "import blocklist 198.51.100.0/24 82800"
        ]
    );
    assert!(list.bad.is_empty(), "{:?}", list.bad);
    let skipped: Vec<(&str, usize)> = list.skipped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        skipped,
        [
            ("expired", 1),
            ("not a ban: captcha", 1),
            ("scope country, not an address", 1)
        ]
    );
    assert_eq!(parse("null\n", &options(Format::Crowdsec)).reports.len(), 0);
}

/// What `cscli decisions import` takes, JSON and CSV, with its defaults: scope ip, type ban.
#[test]
fn crowdsec_import_json_and_csv() {
    let json = r#"[{"duration": "4h", "scope": "ip", "type": "ban", "value": "1.2.3.4"}, {"value": "5.6.7.8", "reason": "my_scenario"}, {"value": "nope"}]"#;
    let list = parse(json, &options(Format::Auto));
    assert_eq!(
        fields(&list),
        [
            "import blocklist 1.2.3.4 14400",
            "import my_scenario 5.6.7.8 3600"
        ]
    );
    assert_eq!(bad(&list).len(), 1);
    assert!(bad(&list)[0].starts_with("entry 3: "), "{:?}", bad(&list));

    let csv = "duration,scope,value\n24h,ip,1.2.3.4\n,range,10.9.0.0/16\n1h,username,root\n";
    assert_eq!(detect(csv), Format::Crowdsec);
    let list = parse(csv, &options(Format::Auto));
    assert_eq!(
        fields(&list),
        [
            "import blocklist 1.2.3.4 86400",
            "import blocklist 10.9.0.0/16 3600"
        ]
    );
    assert_eq!(list.skipped.values().sum::<usize>(), 1);
    let list = parse("value,colour\n1.2.3.4,red\n", &options(Format::Crowdsec));
    assert_eq!(bad(&list)[0], "line 1: unknown column \"colour\"; cscli's are duration, origin, reason, scenario, scope, type, until, value");
}

#[test]
fn detection_by_the_first_entry() {
    assert_eq!(detect(""), Format::Plain);
    assert_eq!(detect("# only a comment\n"), Format::Plain);
    assert_eq!(detect("1.2.3.4\n"), Format::Plain);
    assert_eq!(detect("1.2.3.4,600\n"), Format::Plain);
    assert_eq!(detect("address,bantime,jail\n"), Format::Plain);
    assert_eq!(detect("1.2.3.4 7\n"), Format::Ipsum);
    assert_eq!(detect("  [\n"), Format::Crowdsec);
    assert_eq!(detect("value\n1.2.3.4\n"), Format::Crowdsec);
}

/// A Local API's decisions stream, as crowdsec 1.4 answers a bouncer.
#[test]
fn a_crowdsec_decisions_stream() {
    let text = r#"{"deleted":[{"duration":"-21.194805ms","id":1,"origin":"cscli","scenario":"manual 'ban' from 'test'","scope":"Ip","type":"ban","value":"203.0.113.9"}],"new":[{"duration":"3h59m58.98s","id":2,"origin":"cscli","scenario":"crowdsecurity/ssh-bf","scope":"Ip","type":"ban","value":"203.0.113.10"},{"duration":"4h","id":3,"scope":"Ip","type":"captcha","value":"203.0.113.11"}]}"#;
    let mut list = List::new(&options(Format::CrowdsecLapi));
    let deleted = crowdsec::stream(text, &mut list);
    assert_eq!(deleted, ["203.0.113.9".parse().unwrap()]);
    // Its own duration is not the bantime: the stream says when it ends.
    assert_eq!(
        fields(&list),
        ["import crowdsecurity.ssh-bf 203.0.113.10 3600"]
    );
    assert_eq!(list.skipped.values().sum::<usize>(), 1);
    let mut list = List::new(&options(Format::CrowdsecLapi));
    assert!(crowdsec::stream("{\"deleted\":null,\"new\":null}", &mut list).is_empty());
    assert!(list.reports.is_empty() && list.bad.is_empty());
    crowdsec::stream("<html>", &mut list);
    assert_eq!(list.bad.len(), 1);
}
