"""What every layer may import: the validated configuration (:mod:`common.config`) and Kafka I/O
(:mod:`common.kafka_io`: topic administration, bounded reads, producing). It imports no layer above
:mod:`models`."""
