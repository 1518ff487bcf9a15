//! `jobkeeper gss-token`: makes one SPNEGO token for a service with MIT GSSAPI (the
//! `libgssapi` crate, built with the `kerberos` cargo feature), as the client principal given,
//! with the credential cache and client keytab its environment names (`KRB5CCNAME`,
//! `KRB5_CLIENT_KTNAME`, set by [`super::kerberos`]). Prints the token in base64.

/// Why no token was made.
#[derive(Debug, thiserror::Error)]
pub enum GssError {
    /// GSSAPI refused; its message.
    #[error("{0}")]
    Gss(String),
    /// This binary was built without the `kerberos` feature.
    #[error(
        "this jobkeeper was built without Kerberos (cargo feature `kerberos`, which needs \
         libkrb5-dev and libclang-dev at build time)"
    )]
    NotBuilt,
}

/// A SPNEGO token (base64) for `service` (`HTTP@host`) as `principal`.
#[cfg(feature = "kerberos")]
pub fn token(principal: &str, service: &str) -> Result<String, GssError> {
    use base64::Engine as _;
    use libgssapi::context::{ClientCtx, CtxFlags};
    use libgssapi::credential::{Cred, CredUsage};
    use libgssapi::name::Name;
    use libgssapi::oid::{
        GSS_MECH_KRB5, GSS_MECH_SPNEGO, GSS_NT_HOSTBASED_SERVICE, GSS_NT_KRB5_PRINCIPAL, OidSet,
    };
    let gss = |what: &str, e: libgssapi::error::Error| GssError::Gss(format!("{what}: {e}"));
    let name = Name::new(principal.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
        .map_err(|e| gss("the principal", e))?;
    let mut mechs = OidSet::new();
    mechs.add(GSS_MECH_KRB5).map_err(|e| gss("mechanisms", e))?;
    mechs
        .add(GSS_MECH_SPNEGO)
        .map_err(|e| gss("mechanisms", e))?;
    let cred = Cred::acquire(Some(&name), None, CredUsage::Initiate, Some(&mechs))
        .map_err(|e| gss("tickets from the keytab", e))?;
    let target = Name::new(service.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE))
        .map_err(|e| gss("the service name", e))?;
    let mut ctx = ClientCtx::new(
        Some(cred),
        target,
        CtxFlags::GSS_C_MUTUAL_FLAG,
        Some(GSS_MECH_SPNEGO),
    );
    let tok = ctx
        .step(None, None)
        .map_err(|e| gss("the SPNEGO token", e))?
        .ok_or_else(|| GssError::Gss("GSSAPI made no token".into()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(&*tok))
}

/// Without the `kerberos` feature there is no GSSAPI: [`GssError::NotBuilt`].
#[cfg(not(feature = "kerberos"))]
pub fn token(_principal: &str, _service: &str) -> Result<String, GssError> {
    Err(GssError::NotBuilt)
}
