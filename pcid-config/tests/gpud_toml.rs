//! The installed `gpud.toml` must match simgpu and nothing gpud cannot drive.

use pcid_config::{gpud_config, FullDeviceId, SIMGPU_ID};

fn id(vendor_id: u16, device_id: u16, class: u8, subclass: u8) -> FullDeviceId {
    FullDeviceId {
        vendor_id,
        device_id,
        class,
        subclass,
        interface: 0,
        revision: 0,
    }
}

#[test]
fn gpud_toml_is_clean_and_launches_gpud() {
    let parsed = gpud_config().expect("gpud.toml parses");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let entry = parsed.config.find(&SIMGPU_ID).expect("matches simgpu");
    assert_eq!(entry.program(), "/usr/lib/drivers/gpud");
    assert_eq!(entry.command.get(1).map(String::as_str), Some("pcid"));
}

#[test]
fn gpud_toml_matches_simgpu_of_any_revision() {
    let cfg = gpud_config().expect("parse").config;
    for revision in [0, 1, 2, 0xff] {
        assert!(cfg
            .find(&FullDeviceId {
                revision,
                ..SIMGPU_ID
            })
            .is_some());
    }
}

#[test]
fn gpud_toml_leaves_other_display_controllers_alone() {
    let cfg = gpud_config().expect("parse").config;
    let others = [
        ("QEMU std-VGA", id(0x1234, 0x1111, 0x03, 0x00)),
        ("virtio-gpu", id(0x1af4, 0x1050, 0x03, 0x00)),
        ("virtio-gpu (other display)", id(0x1af4, 0x1050, 0x03, 0x80)),
        ("Intel iGPU", id(0x8086, 0x56c1, 0x03, 0x00)),
        ("NVIDIA 3D controller", id(0x10de, 0x2330, 0x03, 0x02)),
        ("bochs-display", id(0x1234, 0x1111, 0x03, 0x80)),
        (
            "simgpu vendor, other device",
            id(0x7347, 0x0002, 0x03, 0x02),
        ),
        ("simgpu ids, wrong class", id(0x7347, 0x0001, 0x02, 0x00)),
        ("simgpu ids, VGA subclass", id(0x7347, 0x0001, 0x03, 0x00)),
    ];
    for (what, dev) in others {
        assert!(cfg.find(&dev).is_none(), "gpud.toml must not claim {what}");
    }
}
