use super::*;
use crate::wire::{self, from_bytes, from_frame, to_bytes, to_frame, DecodeError};
use proptest::prelude::*;

fn req_bytes(r: &PcidClientRequest) -> Vec<u8> {
    to_bytes(r)
}

#[test]
fn golden_requests() {
    use PcidClientRequest as R;
    let cases: Vec<(R, Vec<u8>)> = vec![
        (R::EnableDevice, vec![0, 0, 0, 0]),
        (R::RequestConfig, vec![1, 0, 0, 0]),
        (R::RequestFeatures, vec![2, 0, 0, 0]),
        (R::RequestVendorCapabilities, vec![3, 0, 0, 0]),
        (
            R::EnableFeature(PciFeature::MsiX),
            vec![4, 0, 0, 0, 1, 0, 0, 0],
        ),
        (
            R::FeatureInfo(PciFeature::Msi),
            vec![5, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            R::SetFeatureInfo(SetFeatureInfo::MsiX {
                function_mask: Some(false),
            }),
            vec![6, 0, 0, 0, 1, 0, 0, 0, 1, 0],
        ),
        (
            R::SetFeatureInfo(SetFeatureInfo::Msi(MsiSetFeatureInfo {
                multi_message_enable: Some(0),
                message_address_and_data: Some(MsiAddrAndData {
                    addr: 0xfee0_0000,
                    data: 0x4041,
                }),
                mask_bits: None,
            })),
            vec![
                6, 0, 0, 0, 0, 0, 0, 0, // SetFeatureInfo, Msi
                1, 0, // Some(0)
                1, 0x00, 0x00, 0xe0, 0xfe, 0, 0, 0, 0, 0x41, 0x40, 0, 0, // Some(addr, data)
                0, // None
            ],
        ),
        (R::ReadConfig(0x34), vec![7, 0, 0, 0, 0x34, 0]),
        (
            R::WriteConfig(4, 0x0406),
            vec![8, 0, 0, 0, 4, 0, 6, 4, 0, 0],
        ),
    ];
    for (req, bytes) in cases {
        assert_eq!(req_bytes(&req), bytes, "{req:?}");
        assert_eq!(from_bytes::<R>(&bytes), Ok(req));
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn golden_responses() {
    use PcidClientResponse as P;
    let msix = MsixInfo {
        table_bar: 0,
        table_offset: 0x2000,
        table_size: 8,
        pba_bar: 0,
        pba_offset: 0x3000,
    };
    let cases: Vec<(P, Vec<u8>)> = vec![
        (P::EnabledDevice, vec![0, 0, 0, 0]),
        (
            P::AllFeatures(vec![PciFeature::Msi, PciFeature::MsiX]),
            vec![2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        ),
        (
            P::VendorCapabilities(vec![VendorSpecificCapability {
                data: vec![0xaa, 0xbb],
            }]),
            vec![
                3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb,
            ],
        ),
        (
            P::FeatureEnabled(PciFeature::MsiX),
            vec![4, 0, 0, 0, 1, 0, 0, 0],
        ),
        (
            P::FeatureStatus(PciFeature::Msi, FeatureStatus::Disabled),
            vec![5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        ),
        (
            P::Error(PcidServerResponseError::NonexistentFeature(PciFeature::Msi)),
            vec![6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            P::Error(PcidServerResponseError::InvalidBitPattern),
            vec![6, 0, 0, 0, 1, 0, 0, 0],
        ),
        (
            P::FeatureInfo(PciFeature::MsiX, PciFeatureInfo::MsiX(msix)),
            vec![
                7, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x20, 0, 0, 8, 0, 0, 0, 0x30, 0, 0,
            ],
        ),
        (
            P::FeatureInfo(
                PciFeature::Msi,
                PciFeatureInfo::Msi(MsiInfo {
                    log2_multiple_message_capable: 2,
                    is_64bit: true,
                    has_per_vector_masking: false,
                }),
            ),
            vec![7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0],
        ),
        (
            P::SetFeatureInfo(PciFeature::MsiX),
            vec![8, 0, 0, 0, 1, 0, 0, 0],
        ),
        (
            P::ReadConfig(0x0001_7347),
            vec![9, 0, 0, 0, 0x47, 0x73, 1, 0],
        ),
        (P::WriteConfig, vec![10, 0, 0, 0]),
    ];
    for (resp, body) in cases {
        assert_eq!(to_frame(&resp), frame(&body), "{resp:?}");
        assert_eq!(from_frame::<P>(&frame(&body)), Ok(resp));
    }
}

/// simgpu as pcid describes it: BAR0 registers (64-bit), BAR2 VRAM (64-bit prefetchable).
fn simgpu_args() -> SubdriverArguments {
    let mut bars = [PciBar::None; 6];
    bars[0] = PciBar::Memory64 {
        addr: 0xfe00_0000,
        size: 0x10_0000,
    };
    bars[2] = PciBar::Memory64 {
        addr: 0x8_0000_0000,
        size: 0x1000_0000,
    };
    SubdriverArguments {
        func: PciFunction {
            addr: PciAddress {
                segment: 0,
                bus: 0,
                device: 3,
                function: 0,
            },
            bars,
            rom: None,
            legacy_interrupt_line: Some(LegacyInterruptLine {
                irq: 11,
                phandled: None,
            }),
            full_device_id: crate::SIMGPU_ID,
        },
    }
}

#[test]
fn golden_config_reply() {
    let mut body = vec![1, 0, 0, 0]; // Config
    body.extend([0, 0, 0, 3, 0]); // segment u16, bus, device, function
    body.extend([2, 0, 0, 0]); // BAR0 Memory64
    body.extend(0xfe00_0000u64.to_le_bytes());
    body.extend(0x10_0000u64.to_le_bytes());
    body.extend([0, 0, 0, 0]); // BAR1 None
    body.extend([2, 0, 0, 0]); // BAR2 Memory64
    body.extend(0x8_0000_0000u64.to_le_bytes());
    body.extend(0x1000_0000u64.to_le_bytes());
    body.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // BAR3..5 None
    body.push(0); // rom None
    body.extend([1, 11, 0]); // Some(LegacyInterruptLine { irq: 11, phandled: None })
    body.extend([0x47, 0x73, 0x01, 0x00, 0x03, 0x02, 0x00, 0x01]); // ids, class, sub, if, rev
    let resp = PcidClientResponse::Config(simgpu_args());
    assert_eq!(to_frame(&resp), frame(&body));
    assert_eq!(from_frame::<PcidClientResponse>(&frame(&body)), Ok(resp));
}

#[test]
fn phandled_tuple_encodes_without_length() {
    let line = LegacyInterruptLine {
        irq: 5,
        phandled: Some((7, [1, 2, 3], 3)),
    };
    let mut want = vec![5, 1, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0];
    want.extend(3u64.to_le_bytes());
    assert_eq!(to_bytes(&line), want);
    assert_eq!(from_bytes::<LegacyInterruptLine>(&want), Ok(line));
}

#[test]
fn malformed_bytes_are_typed_errors() {
    assert_eq!(
        from_bytes::<PcidClientRequest>(&[9, 0, 0, 0]),
        Err(DecodeError::BadVariant {
            ty: "PcidClientRequest",
            index: 9
        })
    );
    assert_eq!(
        from_bytes::<PcidClientRequest>(&[7, 0, 0, 0, 1]),
        Err(DecodeError::UnexpectedEnd { at: 4, needed: 1 })
    );
    assert_eq!(
        from_bytes::<PcidClientRequest>(&[1, 0, 0, 0, 0]),
        Err(DecodeError::TrailingBytes(1))
    );
    assert_eq!(
        from_bytes::<PciRom>(&[0, 0, 0, 0, 0, 0, 0, 0, 2]),
        Err(DecodeError::BadTag {
            what: "bool",
            byte: 2
        })
    );
    // A Vec claiming 2^40 elements must fail on the length, without allocating.
    let mut huge = vec![2, 0, 0, 0];
    huge.extend((1u64 << 40).to_le_bytes());
    assert!(matches!(
        from_bytes::<PcidClientResponse>(&huge),
        Err(DecodeError::UnexpectedEnd { .. })
    ));
    let mut too_long = (wire::MAX_FRAME_LEN + 1).to_le_bytes().to_vec();
    too_long.extend([0; 4]);
    assert_eq!(
        from_frame::<PcidClientResponse>(&too_long),
        Err(DecodeError::FrameTooLong(wire::MAX_FRAME_LEN + 1))
    );
}

fn feature() -> impl Strategy<Value = PciFeature> {
    prop_oneof![Just(PciFeature::Msi), Just(PciFeature::MsiX)]
}

fn bar() -> impl Strategy<Value = PciBar> {
    prop_oneof![
        Just(PciBar::None),
        (any::<u32>(), any::<u32>()).prop_map(|(addr, size)| PciBar::Memory32 { addr, size }),
        (any::<u64>(), any::<u64>()).prop_map(|(addr, size)| PciBar::Memory64 { addr, size }),
        any::<u16>().prop_map(PciBar::Port),
    ]
}

prop_compose! {
    fn args()(
        seg in any::<u16>(), bdf in any::<(u8, u8, u8)>(),
        bars in proptest::array::uniform6(bar()),
        rom in proptest::option::of(any::<(u32, u32, bool)>()),
        line in proptest::option::of((any::<u8>(), proptest::option::of(any::<(u32, [u32; 3], usize)>()))),
        ids in any::<(u16, u16, u8, u8, u8, u8)>(),
    ) -> SubdriverArguments {
        SubdriverArguments { func: PciFunction {
            addr: PciAddress { segment: seg, bus: bdf.0, device: bdf.1, function: bdf.2 },
            bars,
            rom: rom.map(|(addr, size, enabled)| PciRom { addr, size, enabled }),
            legacy_interrupt_line: line.map(|(irq, phandled)| LegacyInterruptLine { irq, phandled }),
            full_device_id: FullDeviceId { vendor_id: ids.0, device_id: ids.1, class: ids.2, subclass: ids.3, interface: ids.4, revision: ids.5 },
        }}
    }
}

fn response() -> impl Strategy<Value = PcidClientResponse> {
    use PcidClientResponse as P;
    prop_oneof![
        Just(P::EnabledDevice),
        args().prop_map(P::Config),
        proptest::collection::vec(feature(), 0..4).prop_map(P::AllFeatures),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..3).prop_map(
            |v| P::VendorCapabilities(
                v.into_iter()
                    .map(|data| VendorSpecificCapability { data })
                    .collect()
            )
        ),
        feature().prop_map(P::FeatureEnabled),
        any::<(u8, u32, u16, u8, u32)>().prop_map(|t| P::FeatureInfo(
            PciFeature::MsiX,
            PciFeatureInfo::MsiX(MsixInfo {
                table_bar: t.0,
                table_offset: t.1,
                table_size: t.2,
                pba_bar: t.3,
                pba_offset: t.4
            })
        )),
        any::<u32>().prop_map(P::ReadConfig),
        Just(P::WriteConfig),
    ]
}

fn request() -> impl Strategy<Value = PcidClientRequest> {
    use PcidClientRequest as R;
    prop_oneof![
        Just(R::EnableDevice),
        Just(R::RequestConfig),
        feature().prop_map(R::EnableFeature),
        proptest::option::of(any::<bool>())
            .prop_map(|m| R::SetFeatureInfo(SetFeatureInfo::MsiX { function_mask: m })),
        (
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<(u64, u32)>()),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(a, b, c)| R::SetFeatureInfo(SetFeatureInfo::Msi(
                MsiSetFeatureInfo {
                    multi_message_enable: a,
                    message_address_and_data: b.map(|(addr, data)| MsiAddrAndData { addr, data }),
                    mask_bits: c,
                }
            ))),
        any::<u16>().prop_map(R::ReadConfig),
        any::<(u16, u32)>().prop_map(|(o, v)| R::WriteConfig(o, v)),
    ]
}

proptest! {
    #[test]
    fn responses_round_trip(resp in response()) {
        prop_assert_eq!(from_frame::<PcidClientResponse>(&to_frame(&resp)), Ok(resp));
    }

    #[test]
    fn requests_round_trip(req in request()) {
        prop_assert_eq!(from_bytes::<PcidClientRequest>(&to_bytes(&req)), Ok(req));
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = from_bytes::<PcidClientResponse>(&bytes);
        let _ = from_bytes::<PcidClientRequest>(&bytes);
        let _ = from_frame::<PcidClientResponse>(&bytes);
    }

    #[test]
    fn truncated_encodings_fail_cleanly(resp in response(), cut in any::<prop::sample::Index>()) {
        let bytes = to_bytes(&resp);
        let cut = cut.index(bytes.len());
        prop_assert!(from_bytes::<PcidClientResponse>(&bytes[..cut]).is_err());
    }
}
