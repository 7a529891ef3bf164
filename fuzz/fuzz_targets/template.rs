//! Ban-command templates: split once, then expanded with values. The first line of the
//! input is the template, the next four the values; whatever they hold, each value must stay
//! inside the arguments it was put in.

#![no_main]

use banshare::config::template::{Template, Values};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Ok(template) = Template::parse(lines.next().unwrap_or_default()) else {
        return;
    };
    let mut value = || lines.next().unwrap_or_default();
    let values = Values {
        ip: value(),
        jail: value(),
        prog: value(),
        bantime: value(),
    };
    let argv = template.expand(&values);
    assert!(!argv.is_empty(), "a template always names a program");
    assert_eq!(
        argv[0],
        template.program(),
        "values never change the program"
    );
});
