//! The front-end side of group keys, with no storage: a device's secret
//! key, opening its envelopes, and sealing envelopes for other devices when
//! activating them, granting key requests or rotating.
//!
//! ```
//! # fn demo(realm: keystead::id::RealmId, group: keystead::id::GroupId,
//! #         me: keystead::id::DeviceId) -> Result<(), keystead::CryptoError> {
//! use keystead::client::DeviceClient;
//! let client = DeviceClient::generate(realm, group, me)?;
//! let public_key = client.public_key(); // send with `register`
//! # let _ = public_key; Ok(()) }
//! ```

use crate::crypto::envelope::{self, EnvelopeContext};
use crate::crypto::{CryptoError, DevicePublicKey, DeviceSecretKey};
use crate::device::{Device, DeviceStatus, Rotation};
use crate::id::{DeviceId, GroupId, RealmId};
use crate::secret::SecretBytes;

/// Length of the group keys [`DeviceClient::new_group_key`] makes.
pub const GROUP_KEY_LEN: usize = 32;

/// One device's view of one group: its secret key and where it belongs.
/// `Debug` never shows the secret key.
pub struct DeviceClient {
    realm: RealmId,
    group: GroupId,
    device: DeviceId,
    secret: DeviceSecretKey,
}

impl std::fmt::Debug for DeviceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceClient({}, {})", self.group, self.device)
    }
}

impl DeviceClient {
    /// A client for a device that already has its secret key.
    pub fn new(realm: RealmId, group: GroupId, device: DeviceId, secret: DeviceSecretKey) -> Self {
        Self {
            realm,
            group,
            device,
            secret,
        }
    }

    /// A client with a fresh secret key. Register its
    /// [`public_key`](Self::public_key) first to learn the device id, or
    /// use [`with_device`](Self::with_device) afterwards.
    pub fn generate(realm: RealmId, group: GroupId, device: DeviceId) -> Result<Self, CryptoError> {
        Ok(Self::new(
            realm,
            group,
            device,
            DeviceSecretKey::generate()?,
        ))
    }

    /// The same key bound to the device id the server assigned.
    #[must_use]
    pub fn with_device(self, device: DeviceId) -> Self {
        Self { device, ..self }
    }

    /// The public key to register (32 bytes).
    pub fn public_key(&self) -> [u8; 32] {
        self.secret.public_key().to_bytes()
    }

    /// A new random group key (for the group's first version or a
    /// rotation).
    pub fn new_group_key() -> Result<SecretBytes, CryptoError> {
        let mut key = vec![0u8; GROUP_KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| CryptoError::SealFailed)?;
        Ok(SecretBytes::new(key))
    }

    /// Open this device's envelope of `key_version` (from `device_key`).
    pub fn open(&self, envelope: &[u8], key_version: u32) -> Result<SecretBytes, CryptoError> {
        envelope::open(
            envelope,
            &self.secret,
            &EnvelopeContext {
                realm: self.realm,
                group: self.group,
                key_version,
                recipient: self.device,
            },
        )
    }

    /// Seal `group_key` of `key_version` to another device of the group
    /// (activation, key request grant).
    pub fn seal_for(
        &self,
        device: &Device,
        key_version: u32,
        group_key: &SecretBytes,
    ) -> Result<Vec<u8>, CryptoError> {
        envelope::seal(
            group_key,
            &DevicePublicKey::from_bytes(&device.public_key)?,
            &EnvelopeContext {
                realm: self.realm,
                group: self.group,
                key_version,
                recipient: device.id,
            },
        )
    }

    /// A rotation from `current_version` sealing `new_key` to every active
    /// device in `devices` except `excluding` (the device being revoked).
    pub fn rotation(
        &self,
        devices: &[Device],
        current_version: u32,
        new_key: &SecretBytes,
        excluding: Option<DeviceId>,
    ) -> Result<Rotation, CryptoError> {
        let next = current_version
            .checked_add(1)
            .ok_or_else(|| CryptoError::InvalidInput {
                field: "current_version",
                reason: "no version after u32::MAX".into(),
            })?;
        let envelopes = devices
            .iter()
            .filter(|d| d.status == DeviceStatus::Active && Some(d.id) != excluding)
            .map(|d| Ok((d.id, self.seal_for(d, next, new_key)?)))
            .collect::<Result<_, CryptoError>>()?;
        Ok(Rotation {
            expected_version: current_version,
            envelopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keystead;
    use crate::crypto::at_rest::StaticKeyProvider;
    use crate::device::NewGroup;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn two_devices_share_and_rotate_a_key() {
        let ks = Keystead::builder()
            .store(MemoryStore::new())
            .keys(StaticKeyProvider::generate().unwrap())
            .build()
            .unwrap();
        let realm = ks
            .realms()
            .create("c", crate::realm::RealmSettings::default())
            .await
            .unwrap();
        let devices = ks.devices(realm.id);
        let group = devices
            .create_group("g", NewGroup::default())
            .await
            .unwrap();
        let placeholder = DeviceId::generate(chrono::Utc::now());

        // The first device activates itself with a key it makes.
        let first = DeviceClient::generate(realm.id, group.id, placeholder).unwrap();
        let d1 = devices
            .register(group.id, "one", "ios", &first.public_key())
            .await
            .unwrap();
        let first = first.with_device(d1.id);
        let k1 = DeviceClient::new_group_key().unwrap();
        devices
            .activate(group.id, d1.id, &first.seal_for(&d1, 1, &k1).unwrap())
            .await
            .unwrap();

        // The second asks; the first grants.
        let second = DeviceClient::generate(realm.id, group.id, placeholder).unwrap();
        let d2 = devices
            .register(group.id, "two", "web", &second.public_key())
            .await
            .unwrap();
        let second = second.with_device(d2.id);
        let req = devices.create_key_request(group.id, d2.id).await.unwrap();
        let mine = first
            .open(&devices.device_key(group.id, d1.id).await.unwrap(), 1)
            .unwrap();
        let env = first.seal_for(&d2, 1, &mine).unwrap();
        devices
            .grant_key_request(group.id, req.id, d1.id, &env)
            .await
            .unwrap();
        let theirs = second
            .open(&devices.device_key(group.id, d2.id).await.unwrap(), 1)
            .unwrap();
        assert_eq!(theirs.expose(), k1.expose());

        // Rotate.
        let k2 = DeviceClient::new_group_key().unwrap();
        let all = devices.list(group.id, None).await.unwrap();
        let rotation = first.rotation(&all, 1, &k2, None).unwrap();
        devices.rotate(group.id, rotation).await.unwrap();
        let theirs = second
            .open(&devices.device_key(group.id, d2.id).await.unwrap(), 2)
            .unwrap();
        assert_eq!(theirs.expose(), k2.expose());
    }
}
