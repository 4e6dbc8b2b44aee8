import dagster as dg

from bankanom_pipeline.defs.automation.schedules import schedules
from bankanom_pipeline.defs.automation.sensors import sensors

defs = dg.Definitions(sensors=sensors, schedules=schedules)
