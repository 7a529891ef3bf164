complete -c banshare-report -s c -l config -d 'Configuration file (the client\'s)' -r -F
complete -c banshare-report -l bantime -d 'Ban length in seconds, or -1 for permanent (fail2ban\'s <bantime>)' -r
complete -c banshare-report -s v -l verbose -d 'Say what happened, also on success'
complete -c banshare-report -s h -l help -d 'Print help (see more with \'--help\')'
complete -c banshare-report -s V -l version -d 'Print version'
