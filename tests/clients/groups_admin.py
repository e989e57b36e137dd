"""Consumer group administration as Kafka's tools do it, with confluent-kafka's AdminClient: a
group whose members have all left keeps its committed offsets and is Empty. It is listed (with
its state and type: ListGroups v5), described, its offsets listed, and its offsets reset."""
import argparse
import time

from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, ConsumerGroupType, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import common


def committed(admin, group):
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    args = p.parse_args()
    group = f"{args.topic}-group"
    c = common.Checker()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(args.topic, num_partitions=2, replication_factor=1)])[args.topic].result(10)

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.subscribe([args.topic])
    deadline = time.time() + 30
    while not consumer.assignment() and time.time() < deadline:
        consumer.poll(0.2)
    c.check(len(consumer.assignment()) == 2, f"the member was assigned both partitions: {consumer.assignment()}")
    consumer.commit(offsets=[TopicPartition(args.topic, 0, 5), TopicPartition(args.topic, 1, 7)], asynchronous=False)
    consumer.close()  # leaves the group
    time.sleep(1)  # past the coordinator's sweep of memberless groups

    listed = admin.list_consumer_groups(request_timeout=10).result()
    mine = [g for g in listed.valid if g.group_id == group]
    c.check(len(mine) == 1, f"the group is listed: {listed.valid} {listed.errors}")
    if mine:
        c.equal(mine[0].state, ConsumerGroupState.EMPTY, "listed state")
        c.equal(mine[0].type, ConsumerGroupType.CLASSIC, "listed type (ListGroups v5)")
    by_type = admin.list_consumer_groups(types={ConsumerGroupType.CLASSIC}, request_timeout=10).result()
    c.check(group in [g.group_id for g in by_type.valid], "listed when filtering by the classic type")
    other = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}, request_timeout=10).result()
    c.check(group not in [g.group_id for g in other.valid], "not listed as a KIP-848 consumer group")

    described = admin.describe_consumer_groups([group])[group].result()
    c.equal(described.state, ConsumerGroupState.EMPTY, "described state")
    c.equal(len(described.members), 0, "members of an empty group")
    c.equal(committed(admin, group), {0: 5, 1: 7}, "committed offsets of the empty group")

    reset = [TopicPartition(args.topic, 0, 1), TopicPartition(args.topic, 1, 2)]
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, reset)])[group].result()
    c.equal(committed(admin, group), {0: 1, 1: 2}, "offsets after a reset")
    c.finish()


if __name__ == "__main__":
    main()
