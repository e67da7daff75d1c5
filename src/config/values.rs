//! Scalar values more than one table checks: a VNI (24 bits), a Gateway
//! Load Balancer endpoint ID, an address or CIDR block. In: a raw value; out: the checked value or the message
//! (positioned by the caller's [`Ctx`]) saying what would be accepted.

use ipnet::IpNet;

use super::context::Ctx;
use super::raw::Spanned;
use super::{ConfigError, MAX_VNI};
use crate::wire::geneve::EndpointId;

/// One VNI: 24 bits.
pub(super) fn vni(cx: &Ctx, v: &Spanned<u32>) -> Result<u32, ConfigError> {
    if *v.get_ref() > MAX_VNI {
        return Err(cx.err(
            v.span(),
            format!(
                "VNI {} is out of range: a VNI is 24 bits, 0 to {MAX_VNI}",
                v.get_ref()
            ),
        ));
    }
    Ok(*v.get_ref())
}

/// A Gateway Load Balancer endpoint ID (`[[session]]`,
/// `[[flows.session]]`): `vpce-` and 1 to 17 hex digits that fit in 64
/// bits, as the console shows it.
pub(super) fn endpoint(cx: &Ctx, v: &Spanned<String>) -> Result<EndpointId, ConfigError> {
    let s = v.get_ref();
    s.parse().map_err(|()| {
        cx.err(
            v.span(),
            format!(
                "{s:?} is not a Gateway Load Balancer endpoint ID: expected {}",
                crate::wire::geneve::ENDPOINT_EXPECTED
            ),
        )
    })
}

/// A CIDR block (host bits cleared) or a single address (/32, /128).
pub(super) fn parse_net_or_ip(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| {
        format!(
            "{s:?} is not an address or CIDR block: expected e.g. \"10.0.1.7\" or \"10.0.2.0/28\""
        )
    })
}
