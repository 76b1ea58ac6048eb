//! Table tests of the pure planner. Rows use named fields so a reordered column cannot silently
//! change what a row means (the positional-row drift Cilium's node_test.go warns about).
//!
//! One file per planner topic; the helpers more than one of them uses live here.

mod growth;
mod release;
mod sizing;

use super::EniView;
use enipool_crds::settings::InstanceLimits;

/// m5.large: 3 ENIs × 10.
const M5_LARGE: InstanceLimits = InstanceLimits { max_enis: 3, ips_per_eni: 10 };

fn view(id: &str, idx: i32, subnet: &str, ips: i32, prefixes: i32) -> EniView {
    EniView {
        id: id.into(),
        device_index: idx,
        subnet_id: subnet.into(),
        ips,
        prefixes,
        ipv6_prefixes: 0,
        excluded: false,
        managed: idx > 0,
        attached: true,
    }
}
