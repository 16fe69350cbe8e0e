<?php
// The fixture application's command line, for pytest:
//   php artisan.php migrate [--queue-only]      Laravel's migrations (jobs, failed_jobs, and
//                                               the course tables unless --queue-only)
//   php artisan.php migrate --path=DIR          the migrations of DIR (database/...) through
//                                               Laravel's Migrator and its migrations table
//   php artisan.php queue:work [--stop-when-empty] [--fast-forward] [--max-jobs=N]
//                                               Laravel's Worker on the database connection;
//                                               --fast-forward moves Carbon's clock to the next
//                                               due job instead of waiting for it
//   php artisan.php call NAME [JSON]            one scenario of scenarios.php; prints JSON
// Errors: the exception on stderr, exit status 1.

declare(strict_types=1);

require __DIR__ . '/bootstrap.php';
require __DIR__ . '/scenarios.php';
require __DIR__ . '/scenarios_fr.php';

use Illuminate\Contracts\Debug\ExceptionHandler;
use Illuminate\Database\Migrations\DatabaseMigrationRepository;
use Illuminate\Database\Migrations\Migrator;
use Illuminate\Filesystem\Filesystem;
use Illuminate\Queue\Events\JobFailed;
use Illuminate\Queue\Events\JobProcessed;
use Illuminate\Queue\Worker;
use Illuminate\Queue\WorkerOptions;
use Illuminate\Support\Carbon;
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Schema;

function migrate(bool $queueOnly): array
{
    $ran = [];
    foreach (glob(__DIR__ . '/database/migrations/*.php') as $file) {
        $before = get_declared_classes();
        require_once $file;
        $class = array_values(array_diff(get_declared_classes(), $before))[0];
        $migration = new $class();
        $isQueue = str_contains($file, '_jobs_table');
        $table = $isQueue
            ? (str_contains($file, 'failed_jobs') ? 'failed_jobs' : 'jobs')
            : 'course_units';
        if (($queueOnly && !$isQueue) || Schema::hasTable($table)) {
            continue;
        }
        $migration->up();
        $ran[] = basename($file, '.php');
    }
    return $ran;
}

/**
 * `php artisan migrate --path=DIR`: Laravel's own Migrator, recording what ran in the
 * `migrations` table, as MigrateCommand wires it.
 */
function migrate_path(string $dir): array
{
    $app = Illuminate\Container\Container::getInstance();
    $repository = new DatabaseMigrationRepository($app['db'], 'migrations');
    if (!$repository->repositoryExists()) {
        $repository->createRepository();
    }
    $migrator = new Migrator($repository, $app['db'], new Filesystem(), $app['events']);
    $ran = $migrator->run([__DIR__ . '/' . $dir]);
    return array_map(fn (string $file) => basename($file, '.php'), $ran);
}

/** `php artisan queue:work` on the database connection, as WorkCommand wires it. */
function work(array $flags): array
{
    $app = Illuminate\Container\Container::getInstance();
    $stats = ['processed' => 0, 'failed' => 0, 'released' => 0];
    $app['events']->listen(JobProcessed::class, function () use (&$stats) {
        $stats['processed']++;
    });
    // WorkCommand::logFailedJob: the failed job goes to the failer (failed_jobs).
    $app['events']->listen(JobFailed::class, function (JobFailed $event) use ($app, &$stats) {
        $stats['failed']++;
        $app['queue.failer']->log(
            $event->connectionName, $event->job->getQueue(), $event->job->getRawBody(),
            $event->exception
        );
    });
    $worker = new Worker($app['queue'], $app['events'], $app[ExceptionHandler::class], fn () => false);
    $options = new WorkerOptions('default', 0, 128, 60, 0, 1, false, true, 0, 0);
    $connection = $app['queue']->connection('database');
    $maxJobs = (int) ($flags['max-jobs'] ?? 0);
    $ran = 0;
    while ($maxJobs === 0 || $ran < $maxJobs) {
        $job = $connection->pop('default');
        if ($job === null) {
            $next = isset($flags['fast-forward'])
                ? DB::table('jobs')->whereNull('reserved_at')->min('available_at')
                : null;
            if ($next === null) {
                if (isset($flags['stop-when-empty'])) {
                    break;
                }
                usleep(100000);
                continue;
            }
            Carbon::setTestNow(Carbon::createFromTimestamp((int) $next));
            continue;
        }
        try {
            $worker->process('database', $job, $options);
        } catch (Throwable $e) {
            $app[ExceptionHandler::class]->report($e);  // Worker::runJob does the same
        }
        $stats['released'] += $job->isReleased() ? 1 : 0;
        $ran++;
    }
    return $stats;
}

function parse_flags(array $args): array
{
    $flags = [];
    foreach ($args as $arg) {
        if (str_starts_with($arg, '--')) {
            [$name, $value] = array_pad(explode('=', substr($arg, 2), 2), 2, true);
            $flags[$name] = $value;
        }
    }
    return $flags;
}

boot_fixture_app();
$command = $argv[1] ?? '';
$rest = array_slice($argv, 2);
try {
    switch ($command) {
        case 'migrate':
            $flags = parse_flags($rest);
            $result = ['ran' => isset($flags['path'])
                ? migrate_path((string) $flags['path'])
                : migrate(isset($flags['queue-only']))];
            break;
        case 'queue:work':
            $result = work(parse_flags($rest));
            break;
        case 'call':
            $args = isset($rest[1]) ? json_decode($rest[1], true, 512, JSON_THROW_ON_ERROR) : [];
            $result = run_scenario($rest[0] ?? '', $args);
            break;
        default:
            fwrite(STDERR, "usage: php artisan.php migrate|queue:work|call NAME [JSON]\n");
            exit(2);
    }
} catch (Throwable $e) {
    fwrite(STDERR, get_class($e) . ': ' . $e->getMessage() . PHP_EOL);
    exit(1);
}
echo json_encode($result, JSON_THROW_ON_ERROR), PHP_EOL;
