//! `device register|activate|key|request|grant|rotate`: this machine as a
//! device of a group (seed 000). The secret key never leaves the key file;
//! the server only ever sees the public key and sealed envelopes.

use super::{AdminAuth, Cli, CliError, files, send};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keystead::client::DeviceClient;
use keystead::crypto::DeviceSecretKey;
use keystead::device::{Device, Group, KeyRequest};
use keystead::id::{DeviceId, GroupId, RealmId};
use keystead::secret::SecretBytes;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::PathBuf;

/// The seed-000 path prefix.
const P: &str = "/authlance/identity/api/v1/realm";

/// The key file of one group: what binds envelopes to this device.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceFile {
    realm: RealmId,
    group: GroupId,
    device: DeviceId,
    /// The X25519 secret key, standard base64.
    secret_key: String,
}

/// The newest key version and the opened group key.
#[derive(Debug)]
pub struct OpenedKey {
    /// The key version.
    pub version: u32,
    /// The group key.
    pub key: SecretBytes,
}

impl OpenedKey {
    /// A short fingerprint of the key (first 8 bytes of its SHA-256, hex),
    /// safe to print and compare between devices.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.key.expose());
        digest.as_ref()[..8]
            .iter()
            .fold(String::with_capacity(16), |mut hex, b| {
                use std::fmt::Write as _;
                let _ = write!(hex, "{b:02x}");
                hex
            })
    }
}

impl Cli {
    fn device_path(&self, group: GroupId) -> PathBuf {
        self.home.join("devices").join(format!("{group}.json"))
    }

    /// This machine's device of `group`, with its secret key.
    pub fn device_client(&self, group: GroupId) -> Result<(DeviceId, DeviceClient), CliError> {
        let path = self.device_path(group);
        let bytes = zeroize::Zeroizing::new(files::read(&path)?.ok_or_else(|| {
            CliError::Usage(format!(
                "no device of group {group} here: run `device register` first"
            ))
        })?);
        let file: DeviceFile = serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        let secret = zeroize::Zeroizing::new(
            STANDARD
                .decode(file.secret_key.as_bytes())
                .map_err(|e| CliError::Usage(format!("{}: secretKey: {e}", path.display())))?,
        );
        let secret = DeviceSecretKey::from_bytes(&secret)?;
        Ok((
            file.device,
            DeviceClient::new(file.realm, file.group, file.device, secret),
        ))
    }

    /// The group (name, realm, current key version).
    pub async fn group(&self, group: GroupId) -> Result<Group, CliError> {
        send(self.authed(Method::GET, &format!("{P}/groups/{group}"))?).await
    }

    /// A device of the group.
    pub async fn device(&self, group: GroupId, device: DeviceId) -> Result<Device, CliError> {
        send(self.authed(Method::GET, &format!("{P}/groups/{group}/devices/{device}"))?).await
    }

    /// The group's devices, optionally only those in `status`.
    pub async fn devices(
        &self,
        group: GroupId,
        status: Option<&str>,
    ) -> Result<Vec<Device>, CliError> {
        let mut request = self.authed(Method::GET, &format!("{P}/groups/{group}/devices"))?;
        if let Some(status) = status {
            request = request.query(&[("status", status)]);
        }
        send(request).await
    }

    /// Register this machine as a device of `group`: a fresh X25519 key
    /// pair, the public half sent, the secret half saved (0600). Refuses
    /// when this home already has a device of the group.
    pub async fn device_register(
        &self,
        group: GroupId,
        name: &str,
        platform: &str,
    ) -> Result<Device, CliError> {
        let path = self.device_path(group);
        if files::read(&path)?.is_some() {
            return Err(CliError::Usage(format!(
                "{} already holds a device of this group",
                path.display()
            )));
        }
        let realm = self.group(group).await?.realm;
        let secret = DeviceSecretKey::generate()?;
        let public_key = secret.public_key().to_bytes();
        let device: Device = send(
            self.authed(Method::POST, &format!("{P}/groups/{group}/devices"))?
                .json(&json!({
                    "name": name,
                    "platform": platform,
                    "publicKey": STANDARD.encode(public_key),
                })),
        )
        .await?;
        let file = DeviceFile {
            realm,
            group,
            device: device.id,
            secret_key: STANDARD.encode(secret.to_bytes().as_ref()),
        };
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(&file).map_err(|e| CliError::Usage(e.to_string()))?,
        );
        // Wipe the base64 copy of the secret key.
        drop(zeroize::Zeroizing::new(file.secret_key));
        files::write_private(&path, &bytes)?;
        Ok(device)
    }

    /// Activate a pending device. With `target`, seal the group key this
    /// device holds to `target`; without, start the group's key: seal a
    /// fresh group key to this device (only while the group has no active
    /// device, so the key never forks).
    pub async fn device_activate(
        &self,
        group: GroupId,
        target: Option<DeviceId>,
    ) -> Result<Device, CliError> {
        let (me, client) = self.device_client(group)?;
        let (target, version, key) = if let Some(target) = target {
            let opened = self.device_key(group).await?;
            (target, opened.version, opened.key)
        } else {
            if !self.devices(group, Some("active")).await?.is_empty() {
                return Err(CliError::Usage(
                    "the group already has a key: ask an active device for it \
                     (`device request`, or `device activate --device <this device>` there)"
                        .into(),
                ));
            }
            let version = self.group(group).await?.key_version;
            (me, version, DeviceClient::new_group_key()?)
        };
        let device = self.device(group, target).await?;
        let envelope = client.seal_for(&device, version, &key)?;
        send(
            self.authed(
                Method::POST,
                &format!("{P}/groups/{group}/devices/{target}/activate"),
            )?
            .json(&json!({"encryptedKey": STANDARD.encode(envelope)})),
        )
        .await
    }

    /// Fetch this device's envelope of the current key version and open it.
    pub async fn device_key(&self, group: GroupId) -> Result<OpenedKey, CliError> {
        let (me, client) = self.device_client(group)?;
        let answer: Value =
            send(self.authed(Method::GET, &format!("{P}/groups/{group}/devices/{me}/key"))?)
                .await?;
        let version = answer
            .get("keyVersion")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| CliError::Usage("the answer has no keyVersion".into()))?;
        let envelope = answer
            .get("encryptedKey")
            .and_then(Value::as_str)
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or_else(|| CliError::Usage("the answer has no base64 encryptedKey".into()))?;
        Ok(OpenedKey {
            version,
            key: client.open(&envelope, version)?,
        })
    }

    /// Ask the group's active devices for the key.
    pub async fn device_request(&self, group: GroupId) -> Result<KeyRequest, CliError> {
        let (me, _) = self.device_client(group)?;
        send(
            self.authed(
                Method::POST,
                &format!("{P}/groups/{group}/devices/key-requests"),
            )?
            .json(&json!({"deviceId": me.to_string()})),
        )
        .await
    }

    /// The group's pending key requests.
    pub async fn key_requests(&self, group: GroupId) -> Result<Vec<KeyRequest>, CliError> {
        send(self.authed(
            Method::GET,
            &format!("{P}/groups/{group}/devices/key-requests"),
        )?)
        .await
    }

    /// Grant a key request: seal the key this device holds to the
    /// requester.
    pub async fn device_grant(&self, group: GroupId, request: &str) -> Result<(), CliError> {
        let (me, client) = self.device_client(group)?;
        let pending: KeyRequest = send(self.authed(
            Method::GET,
            &format!("{P}/groups/{group}/devices/key-requests/{request}"),
        )?)
        .await?;
        let opened = self.device_key(group).await?;
        let requester = self.device(group, pending.device_id).await?;
        let envelope = client.seal_for(&requester, opened.version, &opened.key)?;
        let _: Value = send(
            self.authed(
                Method::POST,
                &format!("{P}/groups/{group}/devices/key-requests/{request}/grant"),
            )?
            .json(&json!({
                "deviceId": me.to_string(),
                "encryptedKey": STANDARD.encode(envelope),
            })),
        )
        .await?;
        Ok(())
    }

    /// Rotate the group key (administrator): a fresh key sealed to every
    /// active device, from the version this device last saw. With
    /// `revoke`, that device is revoked in the same commit and gets no
    /// envelope. A concurrent rotation makes this fail with
    /// `KEY_VERSION_CONFLICT`; run it again.
    pub async fn device_rotate(
        &self,
        group: GroupId,
        admin: &AdminAuth,
        revoke: Option<DeviceId>,
    ) -> Result<Value, CliError> {
        let (_, client) = self.device_client(group)?;
        let current = self.group(group).await?.key_version;
        let active = self.devices(group, Some("active")).await?;
        let new_key = DeviceClient::new_group_key()?;
        let rotation = client.rotation(&active, current, &new_key, revoke)?;
        let body = json!({
            "expectedVersion": rotation.expected_version,
            "envelopes": rotation.envelopes.iter().map(|(device, envelope)| json!({
                "deviceId": device.to_string(),
                "encryptedKey": STANDARD.encode(envelope),
            })).collect::<Vec<_>>(),
        });
        let path = match revoke {
            Some(device) => format!("{P}/admin/groups/{group}/devices/{device}/revoke"),
            None => format!("{P}/admin/groups/{group}/keys/rotate"),
        };
        send(self.admin(Method::POST, &path, admin).json(&body)).await
    }
}
