import dagster as dg

from bankanom_pipeline.defs.automation.run_record_sensor import run_record_sensor
from bankanom_pipeline.defs.automation.schedules import schedules
from bankanom_pipeline.defs.automation.sensors import sensors

defs = dg.Definitions(sensors=[*sensors, run_record_sensor], schedules=schedules)
