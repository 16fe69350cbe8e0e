<?php
// What the tests ask the application to do, each through Eloquent, the query builder or the
// bus as application code would. run_scenario(NAME, ARGS) returns what the test checks.
// Every scenario accepts "settings": {"name": "value"}, applied to the session first
// (e.g. lock_timeout, ue_resync.lock_timeout).

declare(strict_types=1);

use App\Jobs\ResyncCourseUnitJob;
use App\Jobs\SendReportJob;
use App\Models\CourseUnit;
use App\Models\CourseUnitElement;
use Illuminate\Support\Facades\DB;

function element_values(array $a): array
{
    $cm = $a['cm'] ?? 10;
    $td = $a['td'] ?? 10;
    $tp = $a['tp'] ?? 10;
    return [
        'course_unit_id' => $a['unit'],
        'code' => $a['code'] ?? 'EC' . bin2hex(random_bytes(4)),
        'name' => $a['name'] ?? 'Element',
        'credits' => $a['credits'] ?? 3,
        'hours_cm' => $cm,
        'hours_td' => $td,
        'hours_tp' => $tp,
        'hours_total' => $a['total'] ?? $cm + $td + $tp,
        'status' => $a['status'] ?? 'active',
    ];
}

/** @return array<string, callable(array): mixed> */
function scenarios(): array
{
    return [
        'create_unit' => fn (array $a) => CourseUnit::create(
            ['code' => $a['code'] ?? 'UE' . bin2hex(random_bytes(4)), 'name' => $a['name'] ?? 'Unit']
            + ($a['columns'] ?? [])
        )->id,
        'create_element' => fn (array $a) => CourseUnitElement::create(element_values($a))->id,
        'update_element' => function (array $a) {
            $element = CourseUnitElement::findOrFail($a['id']);
            $element->update($a['set']);
            return $element->id;
        },
        'delete_element' => fn (array $a) => CourseUnitElement::findOrFail($a['id'])->delete(),
        'restore_element' => fn (array $a) => CourseUnitElement::withTrashed()
            ->findOrFail($a['id'])->restore(),
        'force_delete_element' => fn (array $a) => CourseUnitElement::withTrashed()
            ->findOrFail($a['id'])->forceDelete(),
        // Query-builder UPDATE through the model: one statement, no model events.
        'mass_update' => fn (array $a) => CourseUnitElement::whereIn('course_unit_id', $a['units'])
            ->update($a['set']),
        'insert_many' => function (array $a) {
            $rows = [];
            foreach ($a['units'] as $unit) {
                for ($i = 0; $i < $a['per_unit']; $i++) {
                    $rows[] = element_values(['unit' => $unit, 'credits' => 1, 'cm' => 1, 'td' => 1,
                                              'tp' => 1]) + ['created_at' => now(), 'updated_at' => now()];
                }
            }
            foreach (array_chunk($rows, 1000) as $chunk) {
                CourseUnitElement::insert($chunk);
            }
            return count($rows);
        },
        'failing_transaction' => function (array $a) {
            try {
                DB::transaction(function () use ($a) {
                    CourseUnitElement::findOrFail($a['id'])->update($a['set']);
                    CourseUnitElement::create(element_values(['unit' => $a['unit']]));
                    throw new RuntimeException('import aborted');
                });
            } catch (RuntimeException $e) {
                return $e->getMessage();
            }
            return null;
        },
        'deferred_import' => fn (array $a) => DB::transaction(function () use ($a) {
            DB::statement("SET LOCAL ue_resync.mode = 'deferred'");
            $ids = [];
            for ($i = 0; $i < $a['count']; $i++) {
                $ids[] = CourseUnitElement::create(element_values($a))->id;
            }
            return $ids;
        }),
        // ue-resync's calls, one query-builder line each.
        'insert_request' => fn (array $a) => DB::table('resync.requests')->insertGetId([
            'course_unit_id' => $a['unit'],
            'reason' => $a['reason'],
            'run_at' => now()->addSeconds($a['delay'] ?? 0),
        ]),
        'request' => fn (array $a) => DB::selectOne(
            'select resync.request(?, ?, make_interval(secs => ?)) as job_id',
            [$a['unit'], $a['reason'], $a['delay'] ?? 0]
        )->job_id,
        'sync_now' => fn (array $a) => json_decode(
            DB::selectOne('select resync.sync_now(?) as result', [$a['unit']])->result,
            true
        ),
        'queue_status' => fn (array $a) => (array) DB::table('resync.queue_status')->first(),
        'unit' => fn (array $a) => CourseUnit::findOrFail($a['id'])->toArray(),
        // The old calls.
        'dispatch_job' => function (array $a) {
            $pending = ResyncCourseUnitJob::dispatch($a['unit'], $a['reason'] ?? 'sync_error_recovery');
            if (isset($a['delay'])) {
                $pending->delay(now()->addSeconds($a['delay']));
            }
            return null;
        },
        'dispatch_sync_job' => fn (array $a) => ResyncCourseUnitJob::dispatchSync(
            $a['unit'], $a['reason'] ?? 'immediate_sync'
        ),
        'dispatch_other' => function (array $a) {
            SendReportJob::dispatch($a['unit'], 'office@example.org');
            return null;
        },
        // The benchmark's two writers, timed here so PHP's start-up is not counted.
        'bench_saves' => function (array $a) {
            $ids = $a['ids'];
            DB::select('select 1');  // the connection is opened before the clock starts
            $started = hrtime(true);
            for ($i = 0; $i < $a['n']; $i++) {
                $element = CourseUnitElement::find($ids[$i % count($ids)]);
                $element->hours_cm = (float) $element->hours_cm + 1;  // always a real change
                $element->save();
            }
            return (hrtime(true) - $started) / 1e9;
        },
        'bench_import' => function (array $a) {
            DB::select('select 1');
            $started = hrtime(true);
            DB::transaction(function () use ($a) {
                $units = $a['units'];
                for ($i = 0; $i < $a['n']; $i++) {
                    CourseUnitElement::create(element_values(['unit' => $units[$i % count($units)]]));
                }
            });
            return (hrtime(true) - $started) / 1e9;
        },
    ];
}

function run_scenario(string $name, array $args): mixed
{
    $all = scenarios() + scenarios_fr();
    if (!isset($all[$name])) {
        throw new InvalidArgumentException("no scenario named '$name'");
    }
    foreach ($args['settings'] ?? [] as $setting => $value) {
        DB::statement('SELECT set_config(?, ?, false)', [$setting, (string) $value]);
    }
    return $all[$name]($args);
}
