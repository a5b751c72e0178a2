//! Where the Redis store connects: one server (`redis://`, or `rediss://`
//! with TLS), or whichever server the Sentinels name as the primary
//! (`redis+sentinel://`, `rediss+sentinel://`), asked again at every
//! reconnection so that a failover is followed without a restart.

use std::time::Duration;

use redis::{
    ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, RedisResult,
    TlsCertificates,
};
use secrecy::{ExposeSecret, SecretString};

/// How long one Sentinel may take to name the primary.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

/// What reaching Redis takes besides its URL.
#[derive(Clone, Default)]
pub struct RedisConnectOptions {
    /// The password of the server holding the data (behind Sentinels, the
    /// primary's), given apart from the URL so that it needs no escaping.
    pub password: Option<SecretString>,
    /// PEM roots for `rediss://`, replacing redis-rs's own (the system's).
    pub tls_roots: Option<Vec<u8>>,
}

pub enum RedisAddress {
    Direct(redis::Client),
    Sentinel(SentinelAddress),
}

/// `redis+sentinel://[[user]:password@]host:port[,host:port…]/primary[/db]`.
pub struct SentinelAddress {
    sentinels: Vec<(String, u16)>,
    primary: String,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    tls_roots: Option<Vec<u8>>,
}

fn invalid(reason: &str) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "invalid Redis URL",
        reason.to_owned(),
    ))
}

/// `%XX` escapes of a URL's user or password, decoded.
fn percent_decoded(text: &str) -> Result<String, RedisError> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| invalid("a bad %-escape in the user or password"))?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| invalid("the password is not UTF-8"))
}

impl SentinelAddress {
    fn parse(rest: &str, tls: bool) -> Result<SentinelAddress, RedisError> {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (username, password) = match auth.map(|auth| auth.split_once(':')) {
            None => (None, None),
            Some(None) => (auth.map(percent_decoded).transpose()?, None),
            Some(Some((user, password))) => (
                Some(user)
                    .filter(|user| !user.is_empty())
                    .map(percent_decoded)
                    .transpose()?,
                Some(percent_decoded(password)?),
            ),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("a Sentinel URL names the primary after the hosts"))?;
        let sentinels = hosts
            .split(',')
            .map(|host| {
                let (name, port) = host.rsplit_once(':').unwrap_or((host, "26379"));
                let port = port.parse().map_err(|_| invalid("a bad Sentinel port"))?;
                if name.is_empty() {
                    return Err(invalid("an empty Sentinel host"));
                }
                Ok((name.to_owned(), port))
            })
            .collect::<Result<Vec<_>, RedisError>>()?;
        let mut path = path.split('/');
        let primary = path.next().unwrap_or_default().to_owned();
        if primary.is_empty() {
            return Err(invalid("a Sentinel URL names the primary after the hosts"));
        }
        let db = match path.next() {
            None | Some("") => 0,
            Some(db) => db.parse().map_err(|_| invalid("a bad database number"))?,
        };
        Ok(SentinelAddress {
            sentinels,
            primary,
            db,
            username,
            password,
            tls,
            tls_roots: None,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "rediss"
        } else {
            "redis"
        }
    }

    /// Asks each Sentinel in turn for the primary's address.
    async fn primary(&self) -> RedisResult<(String, u16)> {
        let mut last = invalid("no Sentinel listed");
        for (host, port) in &self.sentinels {
            let url = format!("{}://{host}:{port}/", self.scheme());
            let asked = async {
                let client = client_for(url.as_str().into_connection_info()?, &self.tls_roots)?;
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.primary)
                    .query_async::<Option<(String, u16)>>(&mut connection)
                    .await
            };
            match tokio::time::timeout(SENTINEL_TIMEOUT, asked).await {
                Ok(Ok(Some(address))) => return Ok(address),
                Ok(Ok(None)) => last = invalid("the Sentinels do not know this primary"),
                Ok(Err(error)) => last = error,
                Err(_) => last = invalid("a Sentinel did not answer in time"),
            }
        }
        Err(last)
    }

    async fn client(&self) -> RedisResult<redis::Client> {
        let (host, port) = self.primary().await?;
        let url = format!("{}://{host}:{port}/{}", self.scheme(), self.db);
        let mut info: ConnectionInfo = url.parse()?;
        info.redis.username = self.username.clone();
        info.redis.password = self.password.clone();
        client_for(info, &self.tls_roots)
    }
}

/// A client for `info`, trusting `tls_roots` when it is a TLS address.
fn client_for(info: ConnectionInfo, tls_roots: &Option<Vec<u8>>) -> RedisResult<redis::Client> {
    match (tls_roots, &info.addr) {
        (Some(roots), ConnectionAddr::TcpTls { .. }) => redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(roots.clone()),
            },
        ),
        _ => redis::Client::open(info),
    }
}

impl RedisAddress {
    pub fn parse(url: &str) -> Result<RedisAddress, RedisError> {
        RedisAddress::parse_with(url, &RedisConnectOptions::default())
    }

    /// `url` with `options` applied; a password in both is refused.
    pub fn parse_with(
        url: &str,
        options: &RedisConnectOptions,
    ) -> Result<RedisAddress, RedisError> {
        let password = options
            .password
            .as_ref()
            .map(|password| password.expose_secret().to_owned());
        let sentinel = |rest, tls| {
            let mut address = SentinelAddress::parse(rest, tls)?;
            if password.is_some() {
                if address.password.is_some() {
                    return Err(invalid("a password in both the URL and CD_REDIS_PASSWORD"));
                }
                address.password.clone_from(&password);
            }
            address.tls_roots.clone_from(&options.tls_roots);
            Ok(RedisAddress::Sentinel(address))
        };
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            return sentinel(rest, false);
        }
        if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
            return sentinel(rest, true);
        }
        let mut info = url.into_connection_info()?;
        if password.is_some() {
            if info.redis.password.is_some() {
                return Err(invalid("a password in both the URL and CD_REDIS_PASSWORD"));
            }
            info.redis.password = password;
        }
        client_for(info, &options.tls_roots).map(RedisAddress::Direct)
    }

    /// Whether the address carries a password: the URL's own, when parsed
    /// by [`RedisAddress::parse`].
    pub fn has_password(&self) -> bool {
        match self {
            RedisAddress::Direct(client) => client.get_connection_info().redis.password.is_some(),
            RedisAddress::Sentinel(sentinel) => sentinel.password.is_some(),
        }
    }

    /// A client for the server to use now.
    pub async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            RedisAddress::Direct(client) => Ok(client.clone()),
            RedisAddress::Sentinel(sentinel) => sentinel.client().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_hosts_primary_db_and_credentials() {
        let Ok(RedisAddress::Sentinel(address)) =
            RedisAddress::parse("redis+sentinel://:p%2Fa%3Ds@s1:26379,s2,s3:5000/main/2")
        else {
            panic!("a Sentinel URL");
        };
        assert_eq!(
            address.sentinels,
            [
                ("s1".to_owned(), 26379),
                ("s2".to_owned(), 26379),
                ("s3".to_owned(), 5000)
            ]
        );
        assert_eq!(address.primary, "main");
        assert_eq!(address.db, 2);
        assert_eq!(address.username, None);
        assert_eq!(address.password.as_deref(), Some("p/a=s"));
        assert!(!address.tls);
        assert!(matches!(
            RedisAddress::parse("rediss+sentinel://s1/main"),
            Ok(RedisAddress::Sentinel(SentinelAddress { tls: true, .. }))
        ));
    }

    #[test]
    fn a_password_given_apart_needs_no_escaping_and_goes_to_the_data_node() {
        let options = RedisConnectOptions {
            password: Some(SecretString::from("a/b+c=d")),
            tls_roots: None,
        };
        let Ok(RedisAddress::Direct(client)) =
            RedisAddress::parse_with("redis://127.0.0.1:6379/2", &options)
        else {
            panic!("a direct URL");
        };
        let info = client.get_connection_info();
        assert_eq!(info.redis.password.as_deref(), Some("a/b+c=d"));
        assert_eq!(info.redis.db, 2);
        let Ok(RedisAddress::Sentinel(sentinel)) =
            RedisAddress::parse_with("redis+sentinel://s1,s2/main", &options)
        else {
            panic!("a Sentinel URL");
        };
        assert_eq!(sentinel.password.as_deref(), Some("a/b+c=d"));
        for url in [
            "redis://:other@127.0.0.1/0",
            "redis+sentinel://:other@s1/main",
        ] {
            assert!(RedisAddress::parse(url).is_ok_and(|address| address.has_password()));
            assert!(RedisAddress::parse_with(url, &options).is_err(), "{url}");
        }
    }

    #[test]
    fn bad_sentinel_urls_are_refused() {
        for url in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/",
            "redis+sentinel://s1:port/main",
            "redis+sentinel://:%zz@s1/main",
            "redis+sentinel://,s1/main",
        ] {
            assert!(RedisAddress::parse(url).is_err(), "{url} accepted");
        }
        assert!(matches!(
            RedisAddress::parse("redis://127.0.0.1:6379/0"),
            Ok(RedisAddress::Direct(_))
        ));
    }
}
