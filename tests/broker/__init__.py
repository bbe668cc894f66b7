"""Tests of hydrovisor.broker with real amqtt clients."""
