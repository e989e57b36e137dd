// kafkajs against Chronik: `produce` then (after a broker restart) `verify`.
// Consuming goes through a consumer group (kafkajs has no other way), so this also exercises
// FindCoordinator, JoinGroup, SyncGroup, Heartbeat, OffsetCommit/Fetch and LeaveGroup.
const fs = require('fs');
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs');
const SnappyCodec = require('kafkajs-snappy');
const lz4 = require('lz4js');
const zstd = require('@bokuweb/zstd-wasm');

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec;
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  async compress(encoder) { return Buffer.from(lz4.compress(encoder.buffer)); },
  async decompress(buffer) { return Buffer.from(lz4.decompress(buffer)); },
});
// The wasm module must be initialised exactly once (re-initialising breaks its heap).
const zstdReady = zstd.init();
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  async compress(encoder) { await zstdReady; return Buffer.from(zstd.compress(encoder.buffer, 3)); },
  async decompress(buffer) { await zstdReady; return Buffer.from(zstd.decompress(buffer)); },
});

const CODECS = [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP], ['snappy', CompressionTypes.Snappy],
  ['lz4', CompressionTypes.LZ4], ['zstd', CompressionTypes.ZSTD]];
const PER_CODEC = 40, PARTITIONS = 3, BASE_TS = 1700000000000;

function record(n) {
  const codec = CODECS[Math.floor(n / PER_CODEC)][0];
  return {
    key: `key-${n}`,
    value: `value-${n}-${codec}-` + 'x'.repeat(n % 97),
    headers: { codec, n: String(n) },
    timestamp: String(BASE_TS + n * 1000),
    partition: n % PARTITIONS,
  };
}

const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };
const eq = (got, want, what) => check(JSON.stringify(got) === JSON.stringify(want), `${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);

async function produce(kafka, topic, manifest) {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }], waitForLeaders: true });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  const acked = {};
  for (let c = 0; c < CODECS.length; c++) {
    for (let p = 0; p < PARTITIONS; p++) {
      const ns = [];
      for (let i = 0; i < PER_CODEC; i++) { const n = c * PER_CODEC + i; if (n % PARTITIONS === p) ns.push(n); }
      const res = await producer.send({
        topic, acks: -1, compression: CODECS[c][1],
        messages: ns.map((n) => { const r = record(n); return { key: r.key, value: r.value, headers: r.headers, timestamp: r.timestamp, partition: p }; }),
      });
      // One batch per send: the records got consecutive offsets from baseOffset.
      ns.forEach((n, k) => { acked[n] = [res[0].partition, Number(res[0].baseOffset) + k]; });
    }
  }
  await producer.disconnect();
  fs.writeFileSync(manifest, JSON.stringify(acked));
  console.log(`produced ${Object.keys(acked).length}`);
}

async function verify(kafka, topic, manifest) {
  const acked = JSON.parse(fs.readFileSync(manifest));
  const total = Object.keys(acked).length;
  const consumer = kafka.consumer({ groupId: 'kafkajs-verify', sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const consumed = {};
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${Object.keys(consumed).length} of ${total}`)), 60000);
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        const headers = {};
        for (const [k, v] of Object.entries(message.headers || {})) headers[k] = v.toString();
        consumed[`${partition}:${message.offset}`] = {
          key: message.key.toString(), value: message.value.toString(), headers, timestamp: message.timestamp,
        };
        if (Object.keys(consumed).length >= total) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  eq(Object.keys(consumed).length, total, 'records consumed');
  for (const [n, [p, o]] of Object.entries(acked)) {
    const got = consumed[`${p}:${o}`];
    if (!got) { failures.push(`record ${n} at ${p}:${o} missing`); continue; }
    const want = record(Number(n));
    eq(got.key, want.key, `record ${n} key`);
    eq(got.value, want.value, `record ${n} value`);
    eq(got.headers, want.headers, `record ${n} headers`);
    eq(got.timestamp, want.timestamp, `record ${n} timestamp`);
  }
  for (let p = 0; p < PARTITIONS; p++) {
    const offsets = Object.keys(consumed).filter((k) => k.startsWith(`${p}:`)).map((k) => Number(k.split(':')[1])).sort((a, b) => a - b);
    eq(offsets, offsets.map((_, i) => i), `partition ${p} offsets contiguous`);
  }

  const admin = kafka.admin();
  await admin.connect();
  // The group's committed offsets reached the end of every partition.
  const committed = await admin.fetchOffsets({ groupId: 'kafkajs-verify', topics: [topic] });
  for (const { partition, offset } of committed[0].partitions) {
    const count = Object.values(acked).filter(([p]) => p === partition).length;
    eq(Number(offset), count, `committed offset of partition ${partition}`);
  }
  // List offsets by time: exact in an uncompressed batch; in a compressed one the batch's first
  // offset (the broker does not decompress): never after the answer, never before the first
  // record of the same codec in that partition (each codec is produced separately).
  for (const n of [7, 77]) {
    const [part] = acked[n], ts = Number(record(n).timestamp), codec = Math.floor(n / PER_CODEC);
    const offsetsWhere = (keep) => Object.entries(acked).filter(([m, [p]]) => p === part && keep(Number(m))).map(([, [, o]]) => o);
    const want = Math.min(...offsetsWhere((m) => Number(record(m).timestamp) >= ts));
    const floor = codec === 0 ? want : Math.min(...offsetsWhere((m) => Math.floor(m / PER_CODEC) === codec));
    const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, ts);
    const got = Number(byTime.find((x) => x.partition === part).offset);
    if (got < floor || got > want) throw new Error(`offsets by timestamp of record ${n}: got ${got}, want ${floor}..=${want}`);
  }
  // Delete records, then the earliest offset moves.
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '10' }] });
  const offsets = await admin.fetchTopicOffsets(topic);
  eq(offsets.find((x) => x.partition === 0).low, '10', 'low watermark after deleteTopicRecords');
  // Alter a config and read it back; an unknown cleanup.policy is refused.
  await admin.alterConfigs({ validateOnly: false, resources: [{ type: 2, name: topic, configEntries: [{ name: 'retention.ms', value: '1800000' }] }] });
  const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: topic }] });
  const entry = described.resources[0].configEntries.find((e) => e.configName === 'retention.ms');
  eq(entry && entry.configValue, '1800000', 'retention.ms after alterConfigs');
  try {
    await admin.alterConfigs({ resources: [{ type: 2, name: topic, configEntries: [{ name: 'cleanup.policy', value: 'compact,archive' }] }] });
    failures.push('cleanup.policy=compact,archive was accepted');
  } catch (e) {
    check(String(e.message).includes('cleanup.policy') || String(e.type).includes('INVALID_CONFIG'), `cleanup.policy refusal: ${e.message}`);
  }
  await admin.disconnect();
}

async function main() {
  const [phase, bootstrap, topic, manifest] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: 'chronik-test', brokers: [bootstrap], logLevel: logLevel.WARN, retry: { retries: 8 } });
  if (phase === 'produce') await produce(kafka, topic, manifest);
  else await verify(kafka, topic, manifest);
  if (failures.length) { failures.slice(0, 50).forEach((f) => console.log('FAIL:', f)); process.exit(1); }
  console.log('OK');
}

main().catch((e) => { console.error(e); process.exit(1); });
