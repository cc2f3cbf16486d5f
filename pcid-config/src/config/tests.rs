use super::*;
use proptest::prelude::*;

fn id(vendor_id: u16, device_id: u16, class: u8, subclass: u8, interface: u8) -> FullDeviceId {
    FullDeviceId {
        vendor_id,
        device_id,
        class,
        subclass,
        interface,
        revision: 0,
    }
}

fn parse(text: &str) -> Parsed {
    match Config::parse(text) {
        Ok(p) => p,
        Err(e) => panic!("{text}\n-> {e}"),
    }
}

#[test]
fn parses_every_key() {
    let p = parse(
        r#"
        [[drivers]]
        name = "all"
        class = 0x03
        subclass = 2
        interface = 0x30
        ids = { 0x8086 = [0x5912, 0x56C1], 1af4 = [0x1050] }
        vendor = 0x10de
        device = 0x2330
        device_id_range = { start = 0x100, end = 0x200 }
        command = ["drv", "--flag"]
        "#,
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let d = &p.config.drivers[0];
    assert_eq!(d.name.as_deref(), Some("all"));
    assert_eq!(
        (d.class, d.subclass, d.interface),
        (Some(3), Some(2), Some(0x30))
    );
    let ids = d.ids.as_ref().expect("ids");
    assert_eq!(ids.get(&0x8086), Some(&vec![0x5912, 0x56c1]));
    assert_eq!(ids.get(&0x1af4), Some(&vec![0x1050]));
    assert_eq!((d.vendor, d.device), (Some(0x10de), Some(0x2330)));
    assert_eq!(d.device_id_range, Some(0x100..0x200));
    assert_eq!(d.command, ["drv", "--flag"]);
}

#[test]
fn ids_override_vendor_and_device() {
    let p = parse(
        r#"
        [[drivers]]
        ids = { 0x8086 = [0x1234] }
        vendor = 0x10de
        device = 0x2330
        command = ["x"]
        "#,
    );
    let d = &p.config.drivers[0];
    assert!(d.matches(&id(0x8086, 0x1234, 0, 0, 0)));
    assert!(!d.matches(&id(0x10de, 0x2330, 0, 0, 0)));
    assert!(!d.matches(&id(0x8086, 0x1235, 0, 0, 0)));
}

#[test]
fn vendor_and_device_without_ids() {
    let p = parse("[[drivers]]\nvendor = 0x1AF4\ndevice = 0x1050\ncommand = [\"v\"]\n");
    let d = &p.config.drivers[0];
    assert!(d.matches(&id(0x1af4, 0x1050, 3, 0, 0)));
    assert!(!d.matches(&id(0x1af4, 0x1051, 3, 0, 0)));
    assert!(!d.matches(&id(0x1af5, 0x1050, 3, 0, 0)));
}

#[test]
fn device_id_range_end_is_exclusive() {
    let p =
        parse("[[drivers]]\ndevice_id_range = { start = 0x10, end = 0x20 }\ncommand = [\"r\"]\n");
    let d = &p.config.drivers[0];
    assert!(!d.matches(&id(1, 0x0f, 0, 0, 0)));
    assert!(d.matches(&id(1, 0x10, 0, 0, 0)));
    assert!(d.matches(&id(1, 0x1f, 0, 0, 0)));
    assert!(!d.matches(&id(1, 0x20, 0, 0, 0)));
}

#[test]
fn class_subclass_interface_must_all_match() {
    let p = parse(
        "[[drivers]]\nclass = 0x0C\nsubclass = 0x03\ninterface = 0x30\ncommand = [\"xhcid\"]\n",
    );
    let d = &p.config.drivers[0];
    assert!(d.matches(&id(0x8086, 1, 0x0c, 0x03, 0x30)));
    assert!(!d.matches(&id(0x8086, 1, 0x0c, 0x03, 0x20)));
    assert!(!d.matches(&id(0x8086, 1, 0x0c, 0x04, 0x30)));
    assert!(!d.matches(&id(0x8086, 1, 0x0d, 0x03, 0x30)));
}

#[test]
fn first_match_wins() {
    let p = parse(
        r#"
        [[drivers]]
        class = 0x03
        vendor = 0x1234
        command = ["first"]
        [[drivers]]
        class = 0x03
        command = ["second"]
        "#,
    );
    let find = |v| {
        p.config
            .find(&id(v, 0x1111, 3, 0, 0))
            .map(|d| d.command[0].clone())
    };
    assert_eq!(find(0x1234).as_deref(), Some("first"));
    assert_eq!(find(0x1af4).as_deref(), Some("second"));
    assert_eq!(p.config.find(&id(0x1234, 1, 2, 0, 0)), None);
}

#[test]
fn bare_command_resolves_to_driver_dir() {
    let p = parse(
        "[[drivers]]\ncommand = [\"gpud\"]\n[[drivers]]\ncommand = [\"/scheme/initfs/lib/drivers/nvmed\"]\n",
    );
    assert_eq!(p.config.drivers[0].program(), "/usr/lib/drivers/gpud");
    assert_eq!(
        p.config.drivers[1].program(),
        "/scheme/initfs/lib/drivers/nvmed"
    );
}

#[test]
fn unknown_keys_are_warnings_not_errors() {
    let p = parse(
        r#"
        colour = "blue"
        [[drivers]]
        class = 0x0C
        use_channel = true
        devices = [1, 2]
        device_id_range = { start = 1, end = 2, step = 1 }
        command = ["xhcid"]
        "#,
    );
    assert_eq!(
        p.warnings,
        vec![
            ConfigWarning::UnknownTopLevelKey {
                key: "colour".into()
            },
            ConfigWarning::UnknownKey {
                entry: 0,
                key: "devices".into()
            },
            ConfigWarning::UnknownKey {
                entry: 0,
                key: "use_channel".into()
            },
            ConfigWarning::UnknownRangeKey {
                entry: 0,
                key: "step".into()
            },
        ]
    );
    assert_eq!(p.config.drivers[0].class, Some(0x0c));
}

#[test]
fn rejects_what_pcid_would_crash_on() {
    let err = |t: &str| Config::parse(t).expect_err(t);
    assert_eq!(
        err("[[drivers]]\nclass = 3\n"),
        ConfigError::MissingCommand { entry: 0 }
    );
    assert_eq!(
        err("[[drivers]]\ncommand = []\n"),
        ConfigError::EmptyCommand { entry: 0 }
    );
    assert_eq!(
        err("[[drivers]]\nids = { intel = [1] }\ncommand = [\"x\"]\n"),
        ConfigError::BadVendorKey {
            entry: 0,
            key: "intel".into()
        }
    );
    assert_eq!(
        err("[[drivers]]\nids = { 0x10000 = [1] }\ncommand = [\"x\"]\n"),
        ConfigError::BadVendorKey {
            entry: 0,
            key: "0x10000".into()
        }
    );
    assert!(matches!(
        err("[[drivers]]\nclass = 256\ncommand = [\"x\"]\n"),
        ConfigError::BadValue { entry: 0, ref key, .. } if key == "class"
    ));
    assert!(matches!(
        err("[[drivers]]\nvendor = \"0x8086\"\ncommand = [\"x\"]\n"),
        ConfigError::BadValue { ref key, .. } if key == "vendor"
    ));
    assert!(matches!(
        err("[[drivers]]\nids = { 0x8086 = [70000] }\ncommand = [\"x\"]\n"),
        ConfigError::BadValue { ref key, .. } if key == "ids.0x8086"
    ));
    assert!(matches!(
        err("[[drivers]]\ndevice_id_range = { start = 1 }\ncommand = [\"x\"]\n"),
        ConfigError::BadValue { ref key, .. } if key == "device_id_range.end"
    ));
    assert!(matches!(err("[[drivers]\n"), ConfigError::Syntax(_)));
    assert_eq!(err("name = 1\n"), ConfigError::MissingDrivers);
    assert_eq!(
        err("drivers = [1]\n"),
        ConfigError::EntryNotTable { entry: 0 }
    );
}

#[test]
fn real_redox_driver_configs_match_as_upstream() {
    // Shapes copied from base's drivers/*/config.toml and initfs.toml.
    let p = parse(
        r#"
        [[drivers]]
        name = "virtio-gpu"
        class = 3
        vendor = 0x1AF4
        device = 0x1050
        command = ["/scheme/initfs/lib/drivers/virtio-gpud"]
        [[drivers]]
        class = 0x03
        ids = { 0x8086 = [0x5912, 0x56C1] }
        command = ["ihdgd"]
        [[drivers]]
        class = 0x02
        ids = { 0x8086 = [0x1004, 0x100e, 0x100f, 0x109a, 0x1503] }
        command = ["e1000d"]
        "#,
    );
    let cmd = |i: FullDeviceId| p.config.find(&i).map(DriverConfig::program);
    assert_eq!(
        cmd(id(0x8086, 0x100e, 2, 0, 0)).as_deref(),
        Some("/usr/lib/drivers/e1000d")
    );
    assert_eq!(
        cmd(id(0x8086, 0x56c1, 3, 0, 0)).as_deref(),
        Some("/usr/lib/drivers/ihdgd")
    );
    assert_eq!(
        cmd(id(0x1af4, 0x1050, 3, 0x80, 0)).as_deref(),
        Some("/scheme/initfs/lib/drivers/virtio-gpud")
    );
    assert_eq!(cmd(id(0x8086, 0x100e, 3, 0, 0)), None);
}

/// The rules of pcid's matcher, restated independently for the property test.
fn oracle(d: &DriverConfig, i: &FullDeviceId) -> bool {
    if d.class.is_some() && d.class != Some(i.class) {
        return false;
    }
    if d.subclass.is_some() && d.subclass != Some(i.subclass) {
        return false;
    }
    if d.interface.is_some() && d.interface != Some(i.interface) {
        return false;
    }
    if let Some(ids) = &d.ids {
        let mut found = false;
        for (v, devs) in ids {
            found |= *v == i.vendor_id && devs.contains(&i.device_id);
        }
        if !found {
            return false;
        }
    } else {
        if d.vendor.is_some() && d.vendor != Some(i.vendor_id) {
            return false;
        }
        if d.device.is_some() && d.device != Some(i.device_id) {
            return false;
        }
    }
    match &d.device_id_range {
        Some(r) => r.start <= i.device_id && i.device_id < r.end,
        None => true,
    }
}

/// Renders an entry as TOML the way a config author would write it.
fn render(d: &DriverConfig) -> String {
    let mut s = String::from("[[drivers]]\n");
    let mut num = |k: &str, v: Option<u16>| {
        if let Some(v) = v {
            s += &format!("{k} = {v:#x}\n");
        }
    };
    num("class", d.class.map(u16::from));
    num("subclass", d.subclass.map(u16::from));
    num("interface", d.interface.map(u16::from));
    num("vendor", d.vendor);
    num("device", d.device);
    if let Some(ids) = &d.ids {
        let body: Vec<String> = ids
            .iter()
            .map(|(v, devs)| format!("{v:#06x} = {devs:?}"))
            .collect();
        s += &format!("ids = {{ {} }}\n", body.join(", "));
    }
    if let Some(r) = &d.device_id_range {
        s += &format!(
            "device_id_range = {{ start = {}, end = {} }}\n",
            r.start, r.end
        );
    }
    s += &format!("command = {:?}\n", d.command);
    s
}

fn small() -> impl Strategy<Value = u8> {
    0u8..4
}

fn small16() -> impl Strategy<Value = u16> {
    0u16..6
}

prop_compose! {
    fn driver()(
        class in proptest::option::of(small()),
        subclass in proptest::option::of(small()),
        interface in proptest::option::of(small()),
        ids in proptest::option::of(proptest::collection::btree_map(small16(), proptest::collection::vec(small16(), 0..4), 0..3)),
        vendor in proptest::option::of(small16()),
        device in proptest::option::of(small16()),
        range in proptest::option::of((small16(), small16())),
    ) -> DriverConfig {
        DriverConfig {
            name: None, class, subclass, interface, ids, vendor, device,
            device_id_range: range.map(|(a, b)| a..b),
            command: vec!["drv".into()],
        }
    }
}

prop_compose! {
    fn device_id()(v in small16(), d in small16(), c in small(), s in small(), i in small()) -> FullDeviceId {
        id(v, d, c, s, i)
    }
}

proptest! {
    #[test]
    fn matcher_agrees_with_oracle_after_toml_round_trip(
        drivers in proptest::collection::vec(driver(), 1..4),
        probes in proptest::collection::vec(device_id(), 1..16),
    ) {
        let text: String = drivers.iter().map(render).collect();
        let parsed = Config::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert!(parsed.warnings.is_empty());
        prop_assert_eq!(&parsed.config.drivers, &drivers);
        for probe in &probes {
            let want = drivers.iter().position(|d| oracle(d, probe));
            let got = parsed.config.drivers.iter().position(|d| d.matches(probe));
            prop_assert_eq!(got, want, "{:?}\n{}", probe, text);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Config::parse(&text);
    }
}
