complete -c banshare-client -s c -l config -d 'Configuration file' -r -F
complete -c banshare-client -l log -d 'Where log lines go' -r -f -a "auto\t'syslog when /dev/log exists, otherwise stderr'
stderr\t''
syslog\t''"
complete -c banshare-client -s h -l help -d 'Print help (see more with \'--help\')'
complete -c banshare-client -s V -l version -d 'Print version'
