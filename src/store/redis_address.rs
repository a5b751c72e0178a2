//! Where the Redis store connects: one server (`redis://`, or `rediss://`
//! with TLS), or whichever server the Sentinels name as the primary
//! (`redis+sentinel://`, `rediss+sentinel://`), asked again at every
//! reconnection so that a failover is followed without a restart.

use std::time::Duration;

use redis::{ConnectionInfo, ErrorKind, RedisError, RedisResult};

/// How long one Sentinel may take to name the primary.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

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
                let client = redis::Client::open(url.as_str())?;
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
        redis::Client::open(info)
    }
}

impl RedisAddress {
    pub fn parse(url: &str) -> Result<RedisAddress, RedisError> {
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            return SentinelAddress::parse(rest, false).map(RedisAddress::Sentinel);
        }
        if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
            return SentinelAddress::parse(rest, true).map(RedisAddress::Sentinel);
        }
        redis::Client::open(url).map(RedisAddress::Direct)
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
