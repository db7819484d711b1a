//! Domain test suite run on every storage backend (feature `conformance`).
//!
//! Like the storage conformance suite, a backend's test file expands
//! [`domain_tests!`](crate::domain_tests) with its opener; each case builds a
//! [`Keystead`] on a fresh store with a [`ManualClock`] and a generated
//! [`StaticKeyProvider`], so every domain rule is proven on every backend.

pub mod device;
mod gate;
pub mod isolation;
pub mod mfa;
pub mod oauth;
pub mod policy;
pub mod probe;
pub mod realm;
pub mod step_up;
pub mod token;
pub mod user;
pub mod webauthn;

use crate::Keystead;
use crate::clock::ManualClock;
use crate::crypto::at_rest::StaticKeyProvider;
use crate::store::conformance::Harness;
use chrono::{DateTime, Utc};

/// The instant every suite clock starts at.
pub fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).expect("valid timestamp")
}

/// A keystead instance on the harness's store, with its manual clock.
pub async fn keystead(h: &Harness) -> (Keystead, ManualClock) {
    let clock = ManualClock::new(epoch());
    let ks = Keystead::builder()
        .shared_store(h.open().await)
        .clock(clock.clone())
        .keys(StaticKeyProvider::generate().expect("a random KEK"))
        .build()
        .expect("complete builder");
    (ks, clock)
}

/// Every key and version in the store: what a refused request must leave
/// exactly as it was.
pub(crate) async fn everything(ks: &Keystead) -> Vec<(Vec<u8>, u64)> {
    let store = ks.store();
    let mut all = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(b"", after.as_deref(), 500).await.unwrap();
        let Some((last, _)) = page.last() else {
            return all;
        };
        after = Some(last.clone());
        all.extend(page.into_iter().map(|(k, v)| (k, v.version)));
    }
}

/// Expands to one `#[test]` per domain case for a backend.
#[macro_export]
macro_rules! domain_tests {
    ($open:expr) => {
        $crate::domain_tests!(@cases $open, realm, [
            create_get_list_and_names,
            names_are_unique_under_concurrency,
            disable_enable_update_and_validation,
            delete_sweeps_data_and_frees_the_name
        ]);
        $crate::domain_tests!(@cases $open, user, [
            register_get_list_and_profile,
            update_profile_and_email_index,
            usernames_are_unique_under_concurrency,
            login_and_sessions,
            failures_are_indistinguishable,
            lockout_back_off_and_hard_cap,
            concurrent_failures_are_all_counted,
            update_password_rules,
            rehash_on_parameter_change,
            mfa_required_gives_a_challenge,
            app_tokens,
            delete_removes_everything,
            realms_are_isolated,
            disabled_realm_refuses,
            default_argon2_parameters,
            breached_passwords_and_custom_blocking_runner
        ]);
        $crate::domain_tests!(@cases $open, device, [
            groups_create_list_and_delete,
            lifecycle_and_envelope_checks,
            limit_holds_under_concurrency,
            rotation_is_all_or_nothing,
            concurrent_rotations_have_one_winner,
            old_generations_are_pruned,
            presence_push_tokens_and_public_keys,
            events_replay_follow_and_resume,
            key_requests,
            large_rotation_is_one_commit,
            disabled_realm_refuses
        ]);
        $crate::domain_tests!(@cases $open, mfa, [
            key_lifecycle,
            delete_keys_and_factor_count,
            pending_keys_expire,
            active_key_limit,
            rfc6238_known_answers,
            rfc4226_known_answers,
            skew_boundaries,
            replay_is_refused,
            concurrent_verifications_one_winner,
            bad_input_and_lockout,
            cross_user_and_realm_refused,
            recovery_codes,
            login_challenge_completion,
            concurrent_challenge_completion,
            concurrent_burns_one_winner,
            enrollment_required,
            concurrent_enrollment_one_winner,
            realm_totp_parameters,
            configurable_parameters,
            trusted_devices,
            trusted_devices_revoked,
            trusted_devices_expire,
            random_sequences_never_accept_a_step_twice,
            delete_user_sweeps_mfa
        ]);
        $crate::domain_tests!(@cases $open, token, [
            signing_keys_jwks_and_rotation,
            access_token_claims,
            adversarial_access_tokens,
            forged_payloads_fail_on_their_signature,
            expiry_and_not_before_leeway,
            revoked_sessions_end_tokens,
            refresh_rotation_and_reuse,
            forged_refresh_tokens_kill_nothing,
            purge_removes_only_dead_records,
            rotation_seen_by_another_instance,
            concurrent_refresh_has_one_winner,
            remembered_rotation_yields_to_another_instance,
            remembered_rotation_sees_later_changes,
            refresh_idle_and_absolute_lifetimes,
            expire_all_grace_boundary,
            expire_all_for_one_application,
            revoke_introspect_userinfo_discovery,
            one_time_tokens_are_single_use,
            scoped_tokens,
            magic_links,
            magic_links_by_email_reveal_nothing,
            exchange_grants,
            mfa_realm_gets_challenges
        ]);
        $crate::domain_tests!(@cases $open, policy, [
            password_grant_is_bounded_by_the_client,
            refresh_only_narrows,
            exchange_is_authenticated_and_narrow,
            revocation_and_introspection_need_the_right_client,
            userinfo_takes_its_server_or_openid,
            verified_sign_up_reveals_nothing,
            sign_up_is_closed_by_default,
            unconfirmed_sign_ups_expire
        ]);
        $crate::domain_tests!(@cases $open, step_up, [
            credential_changes_need_a_fresh_login,
            second_factor_users_need_a_fresh_second_factor,
            handed_on_tokens_never_authorize
        ]);
        $crate::domain_tests!(@cases $open, webauthn, [
            register_list_and_rename,
            second_factor_and_delete,
            passwordless_login,
            passwordless_login_opens_a_session,
            replay_is_refused,
            concurrent_finishes_one_winner,
            wrong_origin_and_rp_id,
            tampered_responses,
            other_users_credentials_refused,
            other_realm_refused,
            expired_challenge,
            sign_count_regression_flags_the_credential,
            credential_limit_and_labels,
            passkey_answers_the_login_challenge
        ]);
        $crate::domain_tests!(@cases $open, oauth, [
            code_flow_with_password_and_totp,
            enrollment_magic_link_and_cancel,
            authorization_request_refusals,
            redemption_refusals,
            reused_code_revokes_the_first_tokens,
            concurrent_redemption_one_winner,
            transactions_and_codes_expire,
            purge_keeps_redeemed_codes_until_their_tokens_are_dead,
            realms_are_isolated,
            clients_and_secrets,
            client_credentials_grant,
            discovery_lists_what_is_supported
        ]);
        #[test]
        fn random_operations_never_cross_realms() {
            $crate::suite::isolation::check($crate::store::conformance::opener($open));
        }
    };
    (@cases $open:expr, $module:ident, [$($case:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $case() {
                    $crate::store::conformance::run(
                        $crate::store::conformance::opener($open),
                        $crate::suite::$module::$case,
                    );
                }
            )*
        }
    };
}
