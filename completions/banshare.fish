# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_banshare_global_optspecs
    string join \n h/help V/version
end

function __fish_banshare_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_banshare_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_banshare_using_subcommand
    set -l cmd (__fish_banshare_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c banshare -n "__fish_banshare_needs_command" -s h -l help -d 'Print help'
complete -c banshare -n "__fish_banshare_needs_command" -s V -l version -d 'Print version'
complete -c banshare -n "__fish_banshare_needs_command" -f -a "keygen" -d 'Generate a CURVE key pair: DIR/NAME.key (public) and DIR/NAME.key_secret (mode 0600)'
complete -c banshare -n "__fish_banshare_needs_command" -f -a "report" -d 'Report a ban straight to the servers over CURVE, as banshare-report does when no banshare-client on this host takes it; same arguments and exit codes as banshare-report(1)'
complete -c banshare -n "__fish_banshare_needs_command" -f -a "check-config" -d 'Validate a server.toml or client.toml and the key files it names'
complete -c banshare -n "__fish_banshare_needs_command" -f -a "unban" -d 'Lift a ban on every host: the server forgets it, so do its peers, and every client runs its unban-command'
complete -c banshare -n "__fish_banshare_needs_command" -f -a "import" -d 'Import a blocklist: Spamhaus DROP (text or JSON), FireHOL netsets and ipsets, ipsum, CrowdSec\'s decisions, plain lists, or CSV lines of address,bantime,jail. Each entry is checked like a report, against import-min-prefix rather than min-prefix (protected networks and what covers them, fleet hosts, max-bans), journaled and published in batches; a summary says how many were accepted, duplicates, skipped or refused, and why. A file with a bad entry imports nothing (exit 65), unless --skip-invalid'
complete -c banshare -n "__fish_banshare_needs_command" -f -a "bans" -d 'List the active bans with their expiry and every host that reported them'
complete -c banshare -n "__fish_banshare_needs_command" -f -a "ping" -d 'Check that this host reaches the server, or each of several, and is let in, as banshare-client would be: ask for the first page of the ban list and wait for the answer. Exits 0 when every server answered, 69 when one did not'
complete -c banshare -n "__fish_banshare_needs_command" -f -a "status" -d 'Show the server\'s version, uptime, position, counters, the hosts it has seen, and its peers; or, on a client\'s socket, the servers it follows, their seq, lag and last heartbeat, the backend and its last error, bans applied and failed, and the spool'
complete -c banshare -n "__fish_banshare_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c banshare -n "__fish_banshare_using_subcommand keygen" -l dir -d 'Directory for the two files, created (mode 0750) when missing; one that a user other than root and this one could write is refused (exit 78) before anything is written' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand keygen" -l name -d 'Key name; the server logs hosts by this name' -r
complete -c banshare -n "__fish_banshare_using_subcommand keygen" -l force -d 'Replace existing files'
complete -c banshare -n "__fish_banshare_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c banshare -n "__fish_banshare_using_subcommand report" -s c -l config -d 'Configuration file (the client\'s)' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand report" -l bantime -d 'Ban length in seconds, or -1 for permanent (fail2ban\'s <bantime>)' -r
complete -c banshare -n "__fish_banshare_using_subcommand report" -s v -l verbose -d 'Say what happened, also on success'
complete -c banshare -n "__fish_banshare_using_subcommand report" -s h -l help -d 'Print help'
complete -c banshare -n "__fish_banshare_using_subcommand report" -s V -l version -d 'Print version'
complete -c banshare -n "__fish_banshare_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c banshare -n "__fish_banshare_using_subcommand unban" -l origin -d 'Instead: lift every ban that only this host (its key\'s name) reported, and drop its waiting reports, as after revoking a compromised key' -r
complete -c banshare -n "__fish_banshare_using_subcommand unban" -l socket -d 'The control socket. Without it or --config: the server\'s (/run/banshare/control.sock) when this host runs one, else the client\'s (/run/banshare-client/control.sock)' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand unban" -s c -l config -d 'Take the control socket from this server.toml or client.toml' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand unban" -s h -l help -d 'Print help'
complete -c banshare -n "__fish_banshare_using_subcommand import" -l format -d 'The list\'s format: auto tells them apart by the first entry' -r -f -a "auto\t'Told apart by the first entry'
plain\t'One address or network per line, or CSV lines address,bantime,jail'
spamhaus-json\t''
ipsum\t''
crowdsec\t''"
complete -c banshare -n "__fish_banshare_using_subcommand import" -l bantime -d 'Bantime of entries that give none, such as 600, 1d or -1 (permanent); without it, the server\'s default-bantime' -r
complete -c banshare -n "__fish_banshare_using_subcommand import" -l origin -d 'The name the bans are imported under, as `banshare bans` and `unban --origin` know them; not a host\'s key name' -r
complete -c banshare -n "__fish_banshare_using_subcommand import" -l min-count -d 'ipsum: import the addresses that at least N lists name' -r
complete -c banshare -n "__fish_banshare_using_subcommand import" -l min-prefix -d 'Refuse entries wider than this, such as 16 or 16,48 (IPv4, IPv6), within the server\'s import-min-prefix' -r
complete -c banshare -n "__fish_banshare_using_subcommand import" -l socket -d 'The control socket. Without it or --config: the server\'s (/run/banshare/control.sock) when this host runs one, else the client\'s (/run/banshare-client/control.sock)' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand import" -s c -l config -d 'Take the control socket from this server.toml or client.toml' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand import" -l skip-invalid -d 'Import the good entries of a list with bad ones, and show the bad ones'
complete -c banshare -n "__fish_banshare_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c banshare -n "__fish_banshare_using_subcommand bans" -l format -d 'table, json, plain (one network per line), or for other tools with the time each ban has left: nft (a file nft -f loads), ipset (ipset restore input), csv (address,bantime,jail, which banshare import reads)' -r -f -a "table\t''
json\t''
plain\t''
nft\t''
ipset\t''
csv\t''"
complete -c banshare -n "__fish_banshare_using_subcommand bans" -l socket -d 'The control socket. Without it or --config: the server\'s (/run/banshare/control.sock) when this host runs one, else the client\'s (/run/banshare-client/control.sock)' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand bans" -s c -l config -d 'Take the control socket from this server.toml or client.toml' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand bans" -l json -d 'Print JSON instead of a table (the same as --format json)'
complete -c banshare -n "__fish_banshare_using_subcommand bans" -l pending -d 'List the reports waiting instead: for confirmation by more hosts (min-reporters), or held beyond their key\'s allowance'
complete -c banshare -n "__fish_banshare_using_subcommand bans" -s h -l help -d 'Print help'
complete -c banshare -n "__fish_banshare_using_subcommand ping" -s c -l config -d 'The client configuration to take the server, port and keys from' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand ping" -l server-key -d 'Use this server public key file instead of the configured one' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand ping" -l port -d 'Use this report port instead of the configured one' -r
complete -c banshare -n "__fish_banshare_using_subcommand ping" -l timeout -d 'How long to wait for the answer, such as 500ms or 3s' -r
complete -c banshare -n "__fish_banshare_using_subcommand ping" -s h -l help -d 'Print help'
complete -c banshare -n "__fish_banshare_using_subcommand status" -l socket -d 'The control socket. Without it or --config: the server\'s (/run/banshare/control.sock) when this host runs one, else the client\'s (/run/banshare-client/control.sock)' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand status" -s c -l config -d 'Take the control socket from this server.toml or client.toml' -r -F
complete -c banshare -n "__fish_banshare_using_subcommand status" -l json -d 'Print JSON instead of text'
complete -c banshare -n "__fish_banshare_using_subcommand status" -s h -l help -d 'Print help'
complete -c banshare -n "__fish_banshare_using_subcommand help; and not __fish_seen_subcommand_from keygen report check-config unban import bans ping status help" -f -a "keygen" -d 'Generate a CURVE key pair: DIR/NAME.key (public) and DIR/NAME.key_secret (mode 0600)'
complete -c banshare -n "__fish_banshare_using_subcommand help; and not __fish_seen_subcommand_from keygen report check-config unban import bans ping status help" -f -a "report" -d 'Report a ban straight to the servers over CURVE, as banshare-report does when no banshare-client on this host takes it; same arguments and exit codes as banshare-report(1)'
complete -c banshare -n "__fish_banshare_using_subcommand help; and not __fish_seen_subcommand_from keygen report check-config unban import bans ping status help" -f -a "check-config" -d 'Validate a server.toml or client.toml and the key files it names'
complete -c banshare -n "__fish_banshare_using_subcommand help; and not __fish_seen_subcommand_from keygen report check-config unban import bans ping status help" -f -a "unban" -d 'Lift a ban on every host: the server forgets it, so do its peers, and every client runs its unban-command'
complete -c banshare -n "__fish_banshare_using_subcommand help; and not __fish_seen_subcommand_from keygen report check-config unban import bans ping status help" -f -a "import" -d 'Import a blocklist: Spamhaus DROP (text or JSON), FireHOL netsets and ipsets, ipsum, CrowdSec\'s decisions, plain lists, or CSV lines of address,bantime,jail. Each entry is checked like a report, against import-min-prefix rather than min-prefix (protected networks and what covers them, fleet hosts, max-bans), journaled and published in batches; a summary says how many were accepted, duplicates, skipped or refused, and why. A file with a bad entry imports nothing (exit 65), unless --skip-invalid'
complete -c banshare -n "__fish_banshare_using_subcommand help; and not __fish_seen_subcommand_from keygen report check-config unban import bans ping status help" -f -a "bans" -d 'List the active bans with their expiry and every host that reported them'
complete -c banshare -n "__fish_banshare_using_subcommand help; and not __fish_seen_subcommand_from keygen report check-config unban import bans ping status help" -f -a "ping" -d 'Check that this host reaches the server, or each of several, and is let in, as banshare-client would be: ask for the first page of the ban list and wait for the answer. Exits 0 when every server answered, 69 when one did not'
complete -c banshare -n "__fish_banshare_using_subcommand help; and not __fish_seen_subcommand_from keygen report check-config unban import bans ping status help" -f -a "status" -d 'Show the server\'s version, uptime, position, counters, the hosts it has seen, and its peers; or, on a client\'s socket, the servers it follows, their seq, lag and last heartbeat, the backend and its last error, bans applied and failed, and the spool'
complete -c banshare -n "__fish_banshare_using_subcommand help; and not __fish_seen_subcommand_from keygen report check-config unban import bans ping status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
